FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# The dashboard's and the admin's files, hashed and compressed, for whitenoise to serve.
# Production settings need these variables to load; nothing here connects to them.
RUN DJANGO_SETTINGS_MODULE=offchat_backend.settings.production SECRET_KEY=collectstatic-only \
    ALLOWED_HOSTS=build DATABASE_URL=postgres://build/build REDIS_URL=redis://build:6379/0 \
    python manage.py collectstatic --no-input
RUN useradd --create-home --uid 1000 app && mkdir -p /app/var && chown app /app/var
USER app

EXPOSE 8000
CMD ["gunicorn", "offchat_backend.wsgi:application", "--bind", "0.0.0.0:8000"]
