from django.contrib.auth import get_user_model
from rest_framework import serializers


class UserSerializer(serializers.ModelSerializer):
    """What clients see of a user: no password hash, no last_login (logging in pushes nothing)."""

    class Meta:
        model = get_user_model()
        fields = ("id", "username", "email", "first_name", "last_name")
