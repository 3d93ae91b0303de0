"""Schema steps: the code that applies a declared ``CollectionSchema`` to a database."""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from userfiles_db.schema import CollectionSchema


def create_indexes(collection: Collection[Any], schema: CollectionSchema) -> list[str]:
    """Create the declared indexes (a no-op for an identical existing one); return their names."""
    return [
        collection.create_index(list(spec.keys), **spec.create_options()) for spec in schema.indexes
    ]


def create_collection(database: Database[Any], schema: CollectionSchema) -> Collection[Any]:
    """Create the collection with its validator and indexes, on a database that lacks it.

    Raises PyMongo's ``CollectionInvalid`` if the collection exists already.
    """
    collection = database.create_collection(
        schema.collection,
        validator=schema.validator,
        validationLevel=schema.validation_level,
        validationAction=schema.validation_action,
    )
    create_indexes(collection, schema)
    return collection
