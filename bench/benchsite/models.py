from django.db import models


class BenchItem(models.Model):
    value = models.IntegerField(default=0)
    bucket = models.IntegerField(default=0, db_index=True)
    note = models.CharField(max_length=100, default="")


class Board(models.Model):
    """Decides who sees its cards: a query subscription on cards follows its owner column."""

    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, default="")


class Card(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="cards")
    title = models.CharField(max_length=100, default="")


class ObservedItem(models.Model):
    """The model of the model observers (pgobserve's and DCRF's): its triggers keep old rows,
    so it is apart from ``BenchItem``, whose trigger cost the other scenarios measure."""

    value = models.IntegerField(default=0)
    note = models.CharField(max_length=100, default="")
