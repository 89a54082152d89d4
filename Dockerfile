# The image web and workers share. GPU hosts: build with TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim
ARG TORCH_INDEX=""
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements/ requirements/
RUN if [ -n "$TORCH_INDEX" ]; then pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX"; fi \
 && pip install --no-cache-dir -r requirements/base.txt -c requirements/lock.txt
COPY . .
RUN DJANGO_SECRET_KEY=build RLHF_DATA_DIR=/tmp/build python manage.py collectstatic --noinput -v0 && rm -rf /tmp/build
EXPOSE 8000
