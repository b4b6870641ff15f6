# saescope: one image for the offline jobs and the explorer.
FROM python:3.11-slim-bookworm
RUN apt-get update -q && apt-get install -y -q --no-install-recommends fonts-noto-color-emoji unicode-data npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/saescope
# torch first and pinned, so pip takes the CPU build instead of a multi-GB CUDA one.
# For the GPU variant build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install --no-cache-dir ${TORCH_SPEC}
COPY pyproject.toml README.md ./
COPY app app
COPY sae_core sae_core
COPY precompute precompute
COPY static static
COPY templates templates
RUN pip install --no-cache-dir -e ".[text,styles]"
# The demo's other art styles (npm; licences in NOTICE), drawn once into 128 px PNGs at build time.
ENV SAESCOPE_NPM_DATA=/opt/saescope/.npm-data
RUN npm install -s --no-audit --no-fund --prefix .npm-data emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 \
      @lobehub/fluent-emoji-3d@1.1.0 fluentui-emoji@1.3.0 openmoji@17.0.0 \
    && python -m precompute.emoji_raster
ENV SAESCOPE_PROGRESS=1
VOLUME /data
EXPOSE 8000
CMD ["saescope", "--help"]
