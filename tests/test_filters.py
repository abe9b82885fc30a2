"""Query-subscription filters: what a client may send, and the 400s for everything else."""

import pytest
from django.db.models import Q
from rest_framework.exceptions import ValidationError

from pgobserve.filters import MAX_IN_VALUES, allowed_lookups, build_q
from tests.testapp.models import Item

DECLARED = {"name": ["exact", "icontains"], "value": ["exact", "in", "lt", "gte", "isnull"]}


def errors_of(filters, declared=DECLARED):
    with pytest.raises(ValidationError) as caught:
        build_q(Item, declared, filters)
    return caught.value.detail


def test_exact_and_lookups_build_one_q():
    q = build_q(Item, DECLARED, {"name": "a", "value__in": [1, "2"], "value__lt": "10"})
    assert q == Q(name__exact="a", value__in=[1, 2], value__lt=10)


def test_no_filters_is_everything():
    assert build_q(Item, DECLARED, None) == Q()
    assert build_q(Item, DECLARED, {}) == Q()


def test_list_declaration_allows_exact_only():
    assert build_q(Item, ["value"], {"value": 3}) == Q(value__exact=3)
    assert "value__lt" in errors_of({"value__lt": 3}, ["value"])


def test_undeclared_field_is_rejected_with_the_filterable_ones():
    detail = errors_of({"doc": "x"})
    assert "Not a filterable field" in str(detail["doc"][0])
    assert "name, value" in str(detail["doc"][0])


def test_lookup_not_allowed_on_that_field():
    detail = errors_of({"name__lt": "b"})
    assert "'lt' is not allowed on 'name'" in str(detail["name__lt"][0])


def test_bad_values_name_their_key():
    detail = errors_of({"value": "ten", "value__in": 3, "value__isnull": "yes", "name": None})
    assert set(detail) == {"value", "value__in", "value__isnull", "name"}


def test_nested_values_are_rejected():
    assert "value" in errors_of({"value": {"$gt": 1}})
    assert "name__icontains" in errors_of({"name__icontains": 5})


def test_values_are_not_coerced_into_other_values():
    # int(1.5) == 1 and int(True) == 1: neither may silently filter on 1.
    detail = errors_of({"value": 1.5, "value__in": [1, True], "name": False})
    assert detail == {
        "value": ["“1.5” value must be an integer."],
        "value__in": ["True or false is not a value of this field."],
        "name": ["True or false is not a value of this field."],
    }
    assert build_q(Item, DECLARED, {"value": 2.0}) == Q(value__exact=2)


def test_in_is_bounded():
    assert "value__in" in errors_of({"value__in": list(range(MAX_IN_VALUES + 1))})


def test_filters_must_be_an_object():
    assert "filters" in errors_of(["value", 1])


def test_declaring_an_unsupported_lookup_fails_loudly():
    with pytest.raises(ValueError, match="unsupported lookups"):
        allowed_lookups({"value": ["regex"]})
