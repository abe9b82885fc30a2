"""The same model served by pgobserve and by djangochannelsrestframework (the baseline)."""

from djangochannelsrestframework.generics import GenericAsyncAPIConsumer as DCRFGeneric
from djangochannelsrestframework.observer.generics import (
    ObserverModelInstanceMixin as DCRFObserverMixin,
)
from rest_framework import serializers

from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin
from pgobserve.queries import ObserverQueryMixin

from .models import BenchItem


class BenchItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = BenchItem
        fields = ["id", "value", "bucket", "note"]


class ItemConsumer(ObserverQueryMixin, ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    queryset = BenchItem.objects.all()
    serializer_class = BenchItemSerializer
    query_filter_fields = {"bucket": ["exact"]}
    share_reads = True  # nothing here depends on the socket


class DCRFItemConsumer(DCRFObserverMixin, DCRFGeneric):
    queryset = BenchItem.objects.all()
    serializer_class = BenchItemSerializer


class PrivateItemConsumer(ItemConsumer):
    """The same consumer, each socket reading for itself (the baseline of shared reads)."""

    share_reads = False
