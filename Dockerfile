# The image of docker-compose.yml: Airflow 3.3.2 with OptiStack installed. The Airflow services
# and the locust-worker service run it. Build: docker compose build (docker-compose.yml does it).
FROM apache/airflow:3.3.2-python3.11

# The project lives in AIRFLOW_HOME, laid out as in the repository, because the engine finds
# include/ beside its package (workloads/runner.py) and the DAGs find it beside dags/.
COPY --chown=airflow:root pyproject.toml README.md constraints.txt /opt/airflow/
COPY --chown=airflow:root workloads /opt/airflow/workloads
COPY --chown=airflow:root reports /opt/airflow/reports

# Editable, so workloads/ is imported from /opt/airflow (next to include/), not from a copy in
# site-packages. constraints.txt pins apache-airflow==3.3.2, the version this image already has,
# so pip leaves Airflow alone; `pip check` fails the build if a pin conflicts with a package the
# image ships (its providers), rather than leaving a broken worker behind.
RUN pip install --no-cache-dir -c /opt/airflow/constraints.txt -e /opt/airflow \
    && pip check

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/airflow/include
# Named volumes are mounted here; created now so Docker gives them the airflow user's ownership.
RUN mkdir -p /opt/airflow/results
