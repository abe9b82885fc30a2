"""The seed's example, unchanged but for the imports (DCRF → pgobserve)."""

from django.contrib.auth import get_user_model

from pgobserve import permissions
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin

from . import serializers


class UserConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    queryset = get_user_model().objects.all()
    serializer_class = serializers.UserSerializer
    permission_classes = (permissions.IsAuthenticated,)
