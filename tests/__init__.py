"""efm-pipelines tests: a package, so every module loads once, as tests.<name> (pytest.ini)."""
