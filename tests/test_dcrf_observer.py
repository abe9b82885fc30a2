"""DCRF's observer tests (upstream tests/test_observer.py and
tests/test_model_with_custom_pk_observer.py), on pgobserve.

The test bodies are DCRF 1.3.0's with only the imports changed: the consumers are defined
inside the tests, talk through ``WebsocketCommunicator`` and the in-memory channel layer,
and the writes are committed (``transaction=True``, as upstream). What differs is under
them: upstream, Django's signals feed the model observers; here a real listener on the
test's event loop reads the triggers' notifications and sends the events
(``observer_listener``, tests/fix_observers.py), so the same tests also prove that the
feed works.
"""

import asyncio
from contextlib import AsyncExitStack

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model, user_logged_in
from django.db import transaction
from django.utils.text import slugify
from rest_framework import serializers

from pgobserve.consumers import AsyncAPIConsumer
from pgobserve.decorators import action
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.observer import model_observer, observer
from tests.dcrf_support import connected_communicator
from tests.testapp.models import TestModelWithCustomPK

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
async def listener_for_every_test(observer_listener):
    """The upstream test bodies do not ask for the listener: every test gets it."""
    yield observer_listener


# Upstream: tests/test_observer.py ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_observer_wrapper(settings):
    class TestConsumer(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.handle_user_logged_in.subscribe()
            await super().accept()

        @observer(user_logged_in)
        async def handle_user_logged_in(self, message, observer=None, **kwargs):
            await self.send_json({"message": message, "observer": observer is not None})

    async with connected_communicator(TestConsumer()) as communicator:
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        await database_sync_to_async(user_logged_in.send)(
            sender=user.__class__, request=None, user=user
        )

        response = await communicator.receive_json_from()

        assert {"message": {}, "observer": True} == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_wrapper(settings):
    class TestConsumer(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_observer_wrapper.subscribe()
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_observer_wrapper(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

    async with connected_communicator(TestConsumer()) as communicator:
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.observer.wrapper",
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_wrapper_in_transaction(settings):
    class TestConsumer(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await TestConsumer.user_change_wrapper_in_transaction.subscribe(self)
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_wrapper_in_transaction(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

    async with connected_communicator(TestConsumer()) as communicator:

        @database_sync_to_async
        def create_user_and_wait():

            with transaction.atomic():
                user = get_user_model().objects.create(username="test", email="test@example.com")
                assert async_to_sync(communicator.receive_nothing)(timeout=0.1)
                user.username = "mike"
                user.save()
                assert async_to_sync(communicator.receive_nothing)(timeout=0.1)
                return user

        user = await create_user_and_wait()

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.wrapper.in.transaction",
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_delete_wrapper(settings):
    class TestConsumerObserverDelete(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_observer_delete.subscribe()
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_observer_delete(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

    async with connected_communicator(TestConsumerObserverDelete()) as communicator:
        await communicator.receive_nothing()

        user = await database_sync_to_async(get_user_model())(
            username="test", email="test@example.com"
        )
        await database_sync_to_async(user.save)()

        response = await communicator.receive_json_from()
        await communicator.receive_nothing()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.observer.delete",
        } == response
        pk = user.pk

        await database_sync_to_async(user.delete)()

        response = await communicator.receive_json_from()

        await communicator.receive_nothing()

        assert {
            "action": "delete",
            "body": {"pk": pk},
            "type": "user.change.observer.delete",
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_many_connections_wrapper(settings):
    class TestConsumer(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_many_connections_wrapper.subscribe()
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_many_connections_wrapper(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

    async with AsyncExitStack() as stack:
        communicator1 = await stack.enter_async_context(connected_communicator(TestConsumer()))
        communicator2 = await stack.enter_async_context(connected_communicator(TestConsumer()))
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        response = await communicator1.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.many.connections.wrapper",
        } == response

        await communicator1.disconnect()

        response = await communicator2.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.many.connections.wrapper",
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_many_consumers_wrapper(settings):
    class TestConsumer(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_many_consumers_wrapper_1.subscribe()
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_many_consumers_wrapper_1(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

    class TestConsumer2(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_many_consumers_wrapper_2.subscribe()
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_many_consumers_wrapper_2(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

    async with AsyncExitStack() as stack:
        communicator1 = await stack.enter_async_context(connected_communicator(TestConsumer()))
        communicator2 = await stack.enter_async_context(connected_communicator(TestConsumer2()))

        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        response = await communicator1.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.many.consumers.wrapper.1",
        } == response

        await communicator1.disconnect()

        response = await communicator2.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.many.consumers.wrapper.2",
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_custom_groups_wrapper(settings):
    class TestConsumer(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_custom_groups_wrapper.subscribe(username="test")
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_custom_groups_wrapper(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

        @user_change_custom_groups_wrapper.groups
        def user_change_custom_groups_wrapper(self, instance=None, username=None, **kwargs):
            if username:
                yield f"-instance-username-{slugify(username)}-1"
            else:
                yield f"-instance-username-{instance.username}-1"

    async with connected_communicator(TestConsumer()) as communicator:
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.custom.groups.wrapper",
        } == response

    user = await database_sync_to_async(get_user_model().objects.create)(
        username="test2", email="test@example.com"
    )

    # no event since this is only subscribed to 'test'
    with pytest.raises(asyncio.TimeoutError):
        await communicator.receive_json_from()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_with_class_serializer(settings):
    class UserSerializer(serializers.ModelSerializer):
        class Meta:
            model = get_user_model()
            fields = ["id", "username"]

    class TestConsumerObserverUsers(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.users_changes.subscribe()
            await super().accept()

        @model_observer(get_user_model(), serializer_class=UserSerializer)
        async def users_changes(self, message, action, **kwargs):
            await self.reply(data=message, action=action)

    async with connected_communicator(TestConsumerObserverUsers()) as communicator:
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "response_status": 200,
            "request_id": None,
            "errors": [],
            "data": {
                "id": user.pk,
                "username": user.username,
            },
        } == response

        user.username = "test updated"
        await database_sync_to_async(user.save)()

        response = await communicator.receive_json_from()

        assert {
            "action": "update",
            "response_status": 200,
            "request_id": None,
            "errors": [],
            "data": {
                "id": user.pk,
                "username": user.username,
            },
        } == response

        pk = user.pk
        await database_sync_to_async(user.delete)()

        response = await communicator.receive_json_from()

        assert {
            "action": "delete",
            "response_status": 200,
            "request_id": None,
            "errors": [],
            "data": {
                "id": pk,
                "username": user.username,
            },
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_custom_groups_wrapper_with_split_function_api(settings):
    class TestConsumerObserverCustomGroups(AsyncAPIConsumer):
        async def accept(self, **kwargs):
            await self.user_change_custom_groups.subscribe(username="test")
            await super().accept()

        @model_observer(get_user_model())
        async def user_change_custom_groups(
            self, message, action, message_type, observer=None, **kwargs
        ):
            await self.send_json(dict(body=message, action=action, type=message_type))

        @user_change_custom_groups.groups_for_signal
        def user_change_custom_groups(self, instance=None, **kwargs):
            yield f"-instance-username-{instance.username}-2"

        @user_change_custom_groups.groups_for_consumer
        def user_change_custom_groups(self, username=None, **kwargs):
            yield f"-instance-username-{slugify(username)}-2"

    async with connected_communicator(TestConsumerObserverCustomGroups()) as communicator:
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="test", email="test@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.custom.groups",
        } == response

    user = await database_sync_to_async(get_user_model().objects.create)(
        username="test2", email="test@example.com"
    )

    # no event since this is only subscribed to 'test'
    with pytest.raises(asyncio.TimeoutError):
        await communicator.receive_json_from()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_model_observer_with_request_id(settings):
    class TestConsumerObserverCustomGroups(AsyncAPIConsumer):
        @action()
        async def subscribe(self, username, request_id, **kwargs):
            await self.user_change_custom_groups.subscribe(username=username, request_id=request_id)
            await self.send_json(
                dict(
                    request_id=request_id,
                    action="subscribed",
                )
            )

        @model_observer(get_user_model())
        async def user_change_custom_groups(
            self,
            message,
            action,
            message_type,
            observer=None,
            subscribing_request_ids=None,
            **kwargs,
        ):
            await self.send_json(
                dict(
                    body=message,
                    action=action,
                    type=message_type,
                    subscribing_request_ids=subscribing_request_ids,
                )
            )

        @user_change_custom_groups.groups_for_signal
        def user_change_custom_groups(self, instance=None, **kwargs):
            yield f"-instance-username-{instance.username}-3"

        @user_change_custom_groups.groups_for_consumer
        def user_change_custom_groups(self, username=None, **kwargs):
            yield f"-instance-username-{slugify(username)}-3"

    async with connected_communicator(TestConsumerObserverCustomGroups()) as communicator:
        await communicator.send_json_to(
            {
                "action": "subscribe",
                "username": "thenewname",
                "request_id": 5,
            }
        )

        response = await communicator.receive_json_from()

        assert response == {
            "action": "subscribed",
            "request_id": 5,
        }

        user = await database_sync_to_async(get_user_model().objects.create)(
            username="thenewname", email="test@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.custom.groups",
            "subscribing_request_ids": [5],
        } == response


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_observer_unsubscribe_behavior_with_custom_groups(settings):
    class TestConsumerObserverCustomGroups(AsyncAPIConsumer):
        @action()
        async def subscribe(self, username, request_id, **kwargs):
            await self.user_change_custom_groups.subscribe(username=username, request_id=request_id)
            await self.send_json(
                dict(
                    request_id=request_id,
                    action="subscribed",
                )
            )

        @action()
        async def unsubscribe(self, username, request_id, **kwargs):
            await self.user_change_custom_groups.unsubscribe(
                username=username, request_id=request_id
            )
            await self.send_json(
                dict(
                    request_id=request_id,
                    action="unsubscribed",
                )
            )

        @model_observer(get_user_model())
        async def user_change_custom_groups(
            self,
            message,
            action,
            message_type,
            observer=None,
            subscribing_request_ids=None,
            **kwargs,
        ):
            await self.send_json(
                dict(
                    body=message,
                    action=action,
                    type=message_type,
                    subscribing_request_ids=subscribing_request_ids,
                )
            )

        @user_change_custom_groups.groups_for_signal
        def user_change_custom_groups(self, instance=None, **kwargs):
            yield f"-instance-username-{instance.username}-4"

        @user_change_custom_groups.groups_for_consumer
        def user_change_custom_groups(self, username=None, **kwargs):
            yield f"-instance-username-{slugify(username)}-4"

    async with connected_communicator(TestConsumerObserverCustomGroups()) as communicator:
        user = await database_sync_to_async(get_user_model().objects.create)(
            username="thenewname", email="test@example.com"
        )

        assert await communicator.receive_nothing(timeout=0.5)

        await database_sync_to_async(user.delete)()

        assert await communicator.receive_nothing(timeout=0.5)

        await communicator.send_json_to(
            {
                "action": "subscribe",
                "username": "thenewname",
                "request_id": 5,
            }
        )

        response = await communicator.receive_json_from()

        assert response == {
            "action": "subscribed",
            "request_id": 5,
        }

        user = await database_sync_to_async(get_user_model().objects.create)(
            username="thenewname", email="test@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.custom.groups",
            "subscribing_request_ids": [5],
        } == response

        await communicator.send_json_to(
            {
                "action": "unsubscribe",
                "username": "thenewname",
                "request_id": 5,
            }
        )

        response = await communicator.receive_json_from()

        assert response == {
            "action": "unsubscribed",
            "request_id": 5,
        }

        await communicator.send_json_to(
            {
                "action": "subscribe",
                "username": "thenewname2",
                "request_id": 6,
            }
        )

        response = await communicator.receive_json_from()

        assert response == {
            "action": "subscribed",
            "request_id": 6,
        }

        await database_sync_to_async(user.delete)()

        user = await database_sync_to_async(get_user_model().objects.create)(
            username="thenewname", email="test@example.com"
        )

        assert await communicator.receive_nothing()

        user = await database_sync_to_async(get_user_model().objects.create)(
            username="thenewname2", email="test2@example.com"
        )

        response = await communicator.receive_json_from()

        assert {
            "action": "create",
            "body": {"pk": user.pk},
            "type": "user.change.custom.groups",
            "subscribing_request_ids": [6],
        } == response


# Upstream: tests/test_model_with_custom_pk_observer.py --------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_subscription_create_notification(settings):
    class TestSerializer(serializers.ModelSerializer):
        class Meta:
            model = TestModelWithCustomPK
            fields = ("name", "description")

    class TestConsumer(GenericAsyncAPIConsumer):
        queryset = TestModelWithCustomPK.objects.all()
        serializer_class = TestSerializer

        @model_observer(TestModelWithCustomPK)
        async def model_change(
            self,
            message: dict,
            observer=None,
            subscribing_request_ids=[],  # noqa: B006 (upstream's signature)
            **kwargs,
        ):
            for request_id in subscribing_request_ids:
                await self.send_json(dict(request_id=request_id, **message))

        @model_change.serializer
        def model_change(self, instance: TestModelWithCustomPK, action, **kwargs) -> dict:
            return dict(action=action.value, data=TestSerializer(instance).data)

        @action()
        async def subscribe_to_all_changes(self, request_id, **kwargs):
            await self.model_change.subscribe(request_id=request_id)
            await self.send_json(
                dict(
                    request_id=request_id,
                    action="subscribed_to_all_changes",
                )
            )

    # connect
    async with connected_communicator(TestConsumer()) as communicator:
        # subscribe
        subscription_id = 1
        await communicator.send_json_to(
            {"action": "subscribe_to_all_changes", "request_id": subscription_id}
        )

        response = await communicator.receive_json_from()

        assert response == {
            "action": "subscribed_to_all_changes",
            "request_id": subscription_id,
        }

        # create an instance
        created_instance = await database_sync_to_async(TestModelWithCustomPK.objects.create)(
            name="some_unique_name"
        )

        # check the response
        response = await communicator.receive_json_from()
        assert response == {
            "action": "create",
            "request_id": subscription_id,
            "data": TestSerializer(created_instance).data,
        }

        # update the instance
        created_instance.description = "some description"
        await database_sync_to_async(created_instance.save)()

        # check the response
        response = await communicator.receive_json_from()
        assert response == {
            "action": "update",
            "request_id": subscription_id,
            "data": TestSerializer(created_instance).data,
        }

        deleted_instance_data = TestSerializer(created_instance).data

        # delete the instance
        await database_sync_to_async(created_instance.delete)()

        # check the response
        response = await communicator.receive_json_from()
        assert response == {
            "action": "delete",
            "request_id": subscription_id,
            "data": deleted_instance_data,
        }
