"""The same models served by pgobserve and by djangochannelsrestframework (the baseline)."""

from djangochannelsrestframework.generics import GenericAsyncAPIConsumer as DCRFGeneric
from djangochannelsrestframework.observer import model_observer as dcrf_model_observer
from djangochannelsrestframework.observer.generics import (
    ObserverModelInstanceMixin as DCRFObserverMixin,
)
from rest_framework import serializers

from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin
from pgobserve.observer import model_observer
from pgobserve.queries import ObserverQueryMixin

from .models import BenchItem, Card, ObservedItem


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


class CardSerializer(serializers.ModelSerializer):
    class Meta:
        model = Card
        fields = ["id", "board", "title"]


class CardConsumer(ObserverQueryMixin, GenericAsyncAPIConsumer):
    """Cards per owner through their board: ``{"board__owner": user_id}`` joins
    ``benchsite_board``, so an ownership change there moves the cards between sockets."""

    queryset = Card.objects.all()
    serializer_class = CardSerializer
    query_filter_fields = {"board__owner": ["exact"]}


class ObservedItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = ObservedItem
        fields = ["id", "value", "note"]


class ActivityConsumer(GenericAsyncAPIConsumer):
    """Every change of ``ObservedItem`` (the observer's default group), from the triggers."""

    queryset = ObservedItem.objects.all()
    serializer_class = ObservedItemSerializer

    async def accept(self, **kwargs):
        await self.item_activity.subscribe()
        await super().accept(**kwargs)

    @model_observer(ObservedItem, serializer_class=ObservedItemSerializer)
    async def item_activity(self, message, action, **kwargs):
        await self.send_json({"action": action, "data": message})


class DCRFActivityConsumer(DCRFGeneric):
    """The same on DCRF's model observer (Django signals of the writing process)."""

    queryset = ObservedItem.objects.all()
    serializer_class = ObservedItemSerializer

    async def accept(self, **kwargs):
        await self.dcrf_item_activity.subscribe()
        await super().accept(**kwargs)

    @dcrf_model_observer(ObservedItem, serializer_class=ObservedItemSerializer)
    async def dcrf_item_activity(self, message, action, **kwargs):
        await self.send_json({"action": action, "data": message})
