"""The command line: ``trtlab info | inspect | partition | build | bench | report | demo | notebooks``."""
