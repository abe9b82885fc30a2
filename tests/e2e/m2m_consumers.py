"""Consumers of the many-to-many tests (``test_m2m.py``): users shown with their groups."""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin, ObserverQueryMixin


class UserGroupsSerializer(serializers.ModelSerializer):
    """The serializer of DCRF's tests/test_model_observer.py (it shows ``groups``)."""

    class Meta:
        model = get_user_model()
        fields = ("id", "username", "email", "groups")


class PortedM2MUserConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """The consumer of DCRF's ``test_m2m_observer``, imports changed."""

    queryset = get_user_model().objects.all()
    serializer_class = UserGroupsSerializer


class GroupMembersConsumer(ObserverQueryMixin, GenericAsyncAPIConsumer):
    """Query subscriptions filtered on the m2m: the members of a group."""

    queryset = get_user_model().objects.all()
    serializer_class = UserGroupsSerializer
    query_filter_fields = {"groups": ["exact"]}
