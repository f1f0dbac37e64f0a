"""ZenML keys a step's cache on the step's own code, but our steps are thin wrappers: the logic lives in the
`tuneline` package, so its source files are part of every cacheable step's key. Editing the core invalidates
the cache; editing a README does not."""

from pathlib import Path

from zenml.config.cache_policy import CachePolicy

import tuneline

CORE_FILES = sorted(str(p) for p in Path(tuneline.__file__).parent.rglob("*.py"))
CACHE_POLICY = CachePolicy(file_dependencies=CORE_FILES)
