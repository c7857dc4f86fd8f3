"""Backends: each folder is one backend object owning its support rules, compile step, shape
profiles and build-failure isolation (see ``base.py`` for the contract)."""
