"""Models the database-side tests observe: int, uuid and text pks, json, a hostile table name."""

import uuid

from django.db import models


class PlainJSONField(models.TextField):
    """A ``json`` (not ``jsonb``) column: json has no equality operator, so the UPDATE trigger
    must compare row images (``*=``), not values."""

    def db_type(self, connection):
        return "json"


class Item(models.Model):
    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    doc = PlainJSONField(null=True)
    tags = models.JSONField(default=dict)


class UUIDItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)


class TextItem(models.Model):
    # Unbounded text pk: the tests store pks near and over the 8000-byte payload limit
    # (repetitive, so PostgreSQL compresses them under the btree entry limit).
    key = models.TextField(primary_key=True)
    value = models.IntegerField(default=0)


class Weird(models.Model):
    """A table and columns named to break unquoted SQL.

    Django's own ``quote_name`` does not double ``"``, so Django cannot create or query this
    table: migration 0001 creates it with correct quoting, and the tests write to it with
    raw SQL. pgobserve only needs the names from ``_meta``.
    """

    id = models.BigAutoField(primary_key=True, db_column='i"d; drop table x; --')
    label = models.CharField(max_length=50, db_column="La bel'\"")

    class Meta:
        db_table = 'we"ird; drop table x; --'
        managed = False


class Sentinel(models.Model):
    """Written after a test's changes: once its notification arrives, every earlier commit's
    notifications have arrived too (NOTIFY is delivered in commit order)."""


class TestModelWithCustomPK(models.Model):
    """DCRF's model with a text primary key (upstream tests/models.py), for its observer test."""

    __test__ = False  # not a pytest test class

    name = models.CharField(max_length=255, primary_key=True)
    description = models.CharField(max_length=255, null=True, blank=True)


class TestModel(models.Model):
    """DCRF's simple model (upstream tests/models.py), for its instance-mixin tests."""

    __test__ = False  # not a pytest test class

    name = models.CharField(max_length=255)
