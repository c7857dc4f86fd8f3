"""Package layout beyond pyproject.toml: the zoo and the notebooks ship inside the package.

The repository keeps the model zoo in ``data/`` and the notebooks in ``notebooks/`` (one copy
each); the wheel carries them as the package-data folders ``trtlab/_zoo_data`` and
``trtlab/_notebooks``, which :mod:`trtlab.config` finds with :mod:`importlib.resources`.
"""

from setuptools import find_packages, setup

SHIPPED = {"trtlab._zoo_data": "data", "trtlab._notebooks": "notebooks"}

setup(
    packages=find_packages(include=["trtlab", "trtlab.*"]) + sorted(SHIPPED),
    package_dir=SHIPPED,
)
