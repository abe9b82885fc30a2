from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="TestModelWithCustomPK",
            fields=[
                ("name", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("description", models.CharField(blank=True, max_length=255, null=True)),
            ],
        ),
    ]
