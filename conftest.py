# Its presence makes pytest put the repository root on sys.path, so the
# tests import fastconv from this checkout without installing it.
