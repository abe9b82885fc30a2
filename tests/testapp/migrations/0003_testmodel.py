from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0002_testmodelwithcustompk")]

    operations = [
        migrations.CreateModel(
            name="TestModel",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255)),
            ],
        ),
    ]
