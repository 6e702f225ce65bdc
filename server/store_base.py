"""Kept for importers outside the store (server/conversations.py, tests): the names that lived here
now live in server/stores/base.py, server/stores/limits.py and server/stores/common.py."""

from server.stores.base import *  # noqa: F403
from server.stores.base import ConversationNotFound, ResponseStore, StoreError, StoreRefused, StoreUnavailable
from server.stores.common import *  # noqa: F403
from server.stores.common import response_items
from server.stores.engine import ItemLookup
from server.stores.limits import *  # noqa: F403
from server.stores.limits import check_storable

__all__ = [
    "ConversationNotFound",
    "ItemLookup",
    "ResponseStore",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "check_storable",
    "response_items",
]
