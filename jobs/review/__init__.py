"""The human review service: the store (SQLAlchemy, Alembic migrations), the actions consumer, the labels
outbox publisher and the web console (FastAPI, Jinja2). Engine-free review logic is in
``streamwarden.operators.review``."""
