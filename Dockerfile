# Undersign under gunicorn with the production settings (widget/gunicorn_conf.py).
# Built and run by docker-compose.yml; see the README's "Deployment" section.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (not editable) from the sources the wheel needs, then drop them.
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY widget ./widget
COPY static ./static
COPY embed ./embed
RUN pip install . && rm -rf /src

# Run as an unprivileged user that owns nothing but its home.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /app undersign
USER undersign
WORKDIR /app

# gunicorn_conf reads BIND and WEB_CONCURRENCY (worker processes, default one per CPU).
ENV BIND=0.0.0.0:8000
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

CMD ["gunicorn", "-c", "python:widget.gunicorn_conf", "widget:create_app()"]
