"""The review console: a server-rendered FastAPI app (Jinja2 templates, one small script for keyboard
shortcuts, no build step, nothing fetched at run time).

Authentication: a signed session cookie after a password login (argon2id hashes), or an API key
(``X-API-Key: ...`` or ``Authorization: Bearer ...``) for services. Every state-changing request made
with a session must carry the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``); API-key requests carry no cookie, so they need none. Pages under ``/admin`` need the
``admin`` role.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.middleware.sessions import SessionMiddleware

from streamwarden.jobs.review.store import ClaimLost, ReviewStore, StoreError, now_ms
from streamwarden.operators.review.decisions import DecisionError, DecisionInput, validate_decision
from streamwarden.operators.review.routing import DECISION_KINDS, DecisionKind, ReviewRouting
from streamwarden.operators.review.stats import age_s, dashboard, human_duration
from streamwarden.operators.scoring.model_card import default_card_paths
from streamwarden.operators.traffic import ENTITY_KINDS

HERE = Path(__file__).parent
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    via_api_key: bool


def model_thresholds() -> dict[str, float]:
    """Each shipped model's decision threshold (read from its card; the ONNX file is not needed)."""
    out: dict[str, float] = {}
    for path in default_card_paths():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            out[path.parent.name] = float(data["threshold"])
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            continue
    return out


def _ts(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class AppealIn(BaseModel):
    subject_kind: str = Field(description="account, ip, device, asn, target_content or target_account")
    subject_id: str = Field(min_length=1, max_length=1024)
    reason: str = Field("", max_length=2000)
    appeal_id: str | None = Field(None, max_length=128, description="Idempotency key of the appeal.")


# ---- authentication and CSRF (one dependency every route goes through)


async def principal(request: Request) -> Principal | None:
    """Who makes the request (API key or session), after the CSRF check of unsafe session requests."""
    store: ReviewStore = request.app.state.store
    key = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    p: Principal | None
    if key:
        user = store.user_by_api_key(key)
        if user is None:
            raise HTTPException(401, "invalid API key")
        p = Principal(user.username, user.role, True)
    else:
        name = request.session.get("user")
        u = store.user(name) if isinstance(name, str) else None
        p = Principal(u.username, u.role, False) if u else None
    request.state.principal = p
    if request.method in UNSAFE and (p is None or not p.via_api_key):
        await _check_csrf(request)
    return p


async def _check_csrf(request: Request) -> None:
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if sent is None and "form" in request.headers.get("content-type", ""):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise HTTPException(403, "missing or invalid CSRF token (reload the page and try again)")


OptionalUser = Annotated[Principal | None, Depends(principal)]


async def _user(p: OptionalUser) -> Principal:
    if p is None:
        raise HTTPException(401, "log in first")
    return p


async def _admin(p: Annotated[Principal, Depends(_user)]) -> Principal:
    if p.role != "admin":
        raise HTTPException(403, "needs the admin role")
    return p


User = Annotated[Principal, Depends(_user)]
Admin = Annotated[Principal, Depends(_admin)]


def create_app(
    store: ReviewStore,
    routing: ReviewRouting,
    *,
    secret_key: str | None = None,
    https_only: bool = False,
    thresholds: dict[str, float] | None = None,
) -> FastAPI:
    """The console over ``store``; ``secret_key`` signs session cookies (default: kept in the store)."""
    app = FastAPI(title="streamwarden review", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["ts"] = _ts
    templates.env.filters["dur"] = human_duration
    thresholds = model_thresholds() if thresholds is None else thresholds
    app.state.store = store
    app.state.routing = routing

    def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("user", getattr(request.state, "principal", None))
        ctx["csrf_token"] = request.session.get("csrf", "")
        ctx["routing"] = routing
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(
            "/api/"
        )
        if exc.status_code == 401 and wants_html and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        if wants_html:
            if "csrf" not in request.session:
                request.session["csrf"] = secrets.token_urlsafe(32)
            return render(request, "error.html", exc.status_code, message=exc.detail, code=exc.status_code)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    # ---- login

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request) -> Response:
        request.session.setdefault("csrf", secrets.token_urlsafe(32))
        return render(request, "login.html", user=None)

    @app.post("/login", response_class=HTMLResponse)
    async def login(
        request: Request,
        _p: OptionalUser,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> Response:
        user = store.authenticate(username, password)
        if user is None:
            store.audit(username[:64] or "?", "login.failed")
            return render(request, "login.html", 401, user=None, error="wrong user name or password")
        request.session.clear()
        request.session.update(user=user.username, csrf=secrets.token_urlsafe(32))
        store.audit(user.username, "login")
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request, user: User) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # ---- queues

    @app.get("/", response_class=HTMLResponse)
    async def queues(request: Request, user: User, empty: str | None = None) -> Response:
        now = now_ms()
        stats = store.queue_stats(routing.queue_names())
        rows = [(q, human_duration(age_s(q.oldest_created_ms, now))) for q in stats]
        return render(request, "queues.html", queues=rows, empty=empty)

    @app.get("/queues/{queue}", response_class=HTMLResponse)
    async def queue_page(request: Request, queue: str, user: User) -> Response:
        return render(request, "queue.html", queue=queue, jobs=store.jobs_in(queue), now=now_ms())

    @app.post("/queues/{queue}/start")
    async def start(request: Request, queue: str, user: User) -> Response:
        job_id = store.claim_next(queue, user.username, routing.lease_s)
        if job_id is None:
            return RedirectResponse(f"/?empty={queue}", status_code=303)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    # ---- jobs

    def job_page(
        request: Request, user: Principal, job_id: str, status_code: int = 200, **ctx: Any
    ) -> Response:
        job = store.job(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        now = now_ms()
        mine = job.status == "claimed" and job.claimed_by == user.username and (job.lease_until_ms or 0) > now
        features = next((a for a in reversed(job.actions) if a.features), None)
        return render(
            request, "job.html", status_code, job=job, mine=mine, now=now, thresholds=thresholds,
            features=features, decisions=DECISION_KINDS, **ctx,
        )  # fmt: skip

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_get(request: Request, job_id: str, user: User) -> Response:
        store.renew(job_id, user.username, routing.lease_s)
        return job_page(request, user, job_id)

    @app.post("/jobs/{job_id}/decide")
    async def decide(
        request: Request,
        job_id: str,
        user: User,
        decision: Annotated[str, Form()],
        category: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
        escalate_to: Annotated[str, Form()] = "",
    ) -> Response:
        job = store.job(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        if decision not in DECISION_KINDS:
            return job_page(request, user, job_id, 400, error=f"unknown decision {decision!r}")
        kind: DecisionKind = decision
        try:
            d = validate_decision(DecisionInput(kind, category, reason, escalate_to), routing, job.queue)
            store.decide(job_id, user.username, d)
        except DecisionError as exc:
            return job_page(request, user, job_id, 400, error=str(exc))
        except ClaimLost as exc:
            return job_page(request, user, job_id, 409, error=str(exc))
        nxt = store.claim_next(job.queue, user.username, routing.lease_s)
        if nxt is None:
            return RedirectResponse(f"/?empty={job.queue}", status_code=303)
        return RedirectResponse(f"/jobs/{nxt}", status_code=303)

    @app.post("/jobs/{job_id}/release")
    async def release(request: Request, job_id: str, user: User) -> Response:
        store.release(job_id, user.username)
        return RedirectResponse("/", status_code=303)

    # ---- dashboard and admin

    @app.get("/dashboard", response_class=HTMLResponse)
    async def dashboard_page(request: Request, user: User) -> Response:
        now = now_ms()
        stats = store.queue_stats(routing.queue_names())
        rows = [(q, human_duration(age_s(q.oldest_created_ms, now))) for q in stats]
        return render(
            request, "dashboard.html", queues=rows, dash=dashboard(store.decided_jobs(), routing.sla_s),
            backlog=store.outbox_backlog(),
        )  # fmt: skip

    @app.get("/admin/users", response_class=HTMLResponse)
    async def users_page(request: Request, user: Admin) -> Response:
        return render(request, "admin_users.html", users=store.users())

    @app.post("/admin/users", response_class=HTMLResponse)
    async def add_user(
        request: Request,
        user: Admin,
        username: Annotated[str, Form()],
        role: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> Response:
        try:
            store.add_user(username, password, role, actor=user.username)
        except StoreError as exc:
            return render(request, "admin_users.html", 400, users=store.users(), error=str(exc))
        return RedirectResponse("/admin/users", status_code=303)

    @app.get("/admin/audit", response_class=HTMLResponse)
    async def audit_page(request: Request, user: Admin) -> Response:
        return render(request, "admin_audit.html", entries=store.audit_entries(500))

    # ---- JSON API

    @app.post("/api/appeals")
    async def api_appeal(body: AppealIn, user: User) -> JSONResponse:
        if body.subject_kind not in ENTITY_KINDS:
            raise HTTPException(422, f"subject_kind must be one of {list(ENTITY_KINDS)}")
        try:
            job_id, created = store.open_appeal(
                body.subject_kind, body.subject_id, reason=body.reason, queue=routing.appeals_queue,
                actor=user.username, appeal_id=body.appeal_id,
            )  # fmt: skip
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from exc
        return JSONResponse({"job_id": job_id, "created": created}, status_code=201 if created else 200)

    @app.get("/api/queues")
    async def api_queues(user: User) -> JSONResponse:
        now = now_ms()
        return JSONResponse(
            [
                {"queue": q.name, "pending": q.pending, "claimed": q.claimed,
                 "oldest_age_s": age_s(q.oldest_created_ms, now)}
                for q in store.queue_stats(routing.queue_names())
            ]
        )  # fmt: skip

    @app.get("/api/entity-labels/{kind}/{subject_id}")
    async def api_entity_label(kind: str, subject_id: str, user: User) -> JSONResponse:
        lab = store.entity_label(kind, subject_id)
        if lab is None:
            raise HTTPException(404, "no human label for this subject")
        return JSONResponse(
            {"label": lab.label, "category": lab.category, "decision_id": lab.decision_id,
             "decided_ms": lab.decided_ms, "flagged": lab.label == "abuse"}
        )  # fmt: skip

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key or store.secret_key(),
        session_cookie="sw_review",
        same_site="strict",
        https_only=https_only,
        max_age=12 * 3600,
    )
    return app
