from django.db import models


class BenchItem(models.Model):
    value = models.IntegerField(default=0)
    bucket = models.IntegerField(default=0, db_index=True)
    note = models.CharField(max_length=100, default="")
