"""Type aliases shared by the core.

The core accepts any array that implements the Python array API standard, so arrays and
namespaces are typed structurally (``Any``) rather than against one library.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Array: TypeAlias = Any
"""An array of any library that implements the Python array API standard."""

Namespace: TypeAlias = Any
"""An array API namespace, as returned by ``array_api_compat.array_namespace``."""
