"""Hashed API tokens (annotate.ApiToken) replace DRF's authtoken table, which kept the keys in
plain text. Existing tokens are carried over as hashes, so clients keep working with the key they
have; then the plain-text table is dropped."""

import hashlib
from datetime import timedelta, timezone

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.utils.crypto import salted_hmac
from django.utils.dateparse import parse_datetime

OLD_TABLE = "authtoken_token"


def carry_over_plain_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("annotate", "ApiToken")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    now = django.utils.timezone.now()
    expires = now + timedelta(days=settings.RLHF_TOKEN_MAX_AGE_DAYS)  # from the upgrade, not the token's age
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    passwords = dict(User.objects.filter(pk__in=[user_id for _, user_id, _ in rows]).values_list("id", "password"))

    def aware(value):
        value = parse_datetime(value) if isinstance(value, str) else value
        if value is None:
            return now
        return django.utils.timezone.make_aware(value, timezone.utc) if django.utils.timezone.is_naive(value) else value

    ApiToken.objects.bulk_create([
        ApiToken(user_id=user_id, name="api", key_hash=hashlib.sha256(key.encode()).hexdigest(), prefix=key[:8],
                 # the same mark annotate.services.tokens.password_mark computes
                 password_mark=salted_hmac("annotate.api-token", passwords.get(user_id) or "",
                                           algorithm="sha256").hexdigest(),
                 created_at=aware(created), expires_at=expires)
        for key, user_id, created in rows if user_id in passwords
    ])
    schema_editor.execute(f"DROP TABLE {OLD_TABLE}")
    # DRF's app is no longer installed; forget its migrations so that adding it back would work.
    schema_editor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")


class Migration(migrations.Migration):

    dependencies = [
        ('annotate', '0003_round_stages'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(default='api', help_text='what the token is for', max_length=100)),
                ('key_hash', models.CharField(help_text='sha256 hex of the key', max_length=64, unique=True)),
                ('prefix', models.CharField(help_text='first characters of the key, to tell tokens apart', max_length=8)),
                ('password_mark', models.CharField(max_length=64)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('expires_at', models.DateTimeField()),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-id'],
                'indexes': [models.Index(fields=['user', 'created_at'], name='api_token_user_created')],
            },
        ),
        migrations.RunPython(carry_over_plain_tokens, migrations.RunPython.noop),
    ]
