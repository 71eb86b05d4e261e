"""The one object a job or command holds: every operation on the circle buckets."""

from __future__ import annotations

from .buckets import Buckets
from .client import StoreClient
from .copies import Copies
from .fixity import Fixity
from .listing import Listing
from .parts import Parts
from .presign import Presigning
from .staging import Staging
from .uploads import Uploads
from .visibility import Visibility


class ObjectStore(
    Uploads, Parts, Copies, Presigning, Staging, Visibility, Fixity, Listing, Buckets, StoreClient
):
    """Access to the circle buckets of one S3 endpoint.

    Thread-safe: one instance can be shared by the threads of a process;
    ``parallel_uploads`` sizes its connection pool for that many uploads at once.
    Each concern lives in a module of its own (see the package's docstring).
    """
