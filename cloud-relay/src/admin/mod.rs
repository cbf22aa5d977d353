//! The admin side of the relay, for central IT: a separate HTTPS listener (`[admin] listen`) with
//! the fleet status JSON API, Prometheus metrics, the dead-letter API, the trace, and the fleet
//! web page. Nothing here is reachable from the site listener.
//!
//! Code map: [`listener`] (TLS accept loop, client certificate classification), [`auth`] (admin
//! certificate, bearer token, browser sessions, CSRF), [`status`] (per-site status derived from
//! redb), [`metrics`] (`/metrics`), [`dead`] (dead-letter actions), [`trace`] (event path and
//! event views), [`page`] (HTML). Routes and their documentation: `docs/status-api.md`.
//!
//! | route | credential | what |
//! |---|---|---|
//! | `GET /v1/sites`, `GET /v1/sites/{id}` | cert, token, session | status JSON |
//! | `GET /v1/sites/{id}/events?limit=`, `/v1/sites/{id}/quarantine` | cert, token, session | recent events, quarantine |
//! | `GET /v1/dead-letters[?site=]`, `GET /v1/dead-letters/{site}/{seq}` | cert, token, session | dead letters |
//! | `POST /v1/dead-letters/{site}/{seq}/replay`, `.../skip` | cert, token | dead-letter actions |
//! | `GET /v1/trace?site=&seq=` or `?barcode=` | cert, token, session | an event's path |
//! | `GET /metrics` | cert, token | Prometheus |
//! | `GET /`, `GET /sites/{id}`, `POST /sites/{id}/dead-letters/{seq}/{replay,skip}` | cert or session (+ form token) | the page |
//! | `GET /login`, `POST /login`, `POST /logout` | none | browser session |

pub mod auth;
pub mod cert;
pub mod dead;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod status;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminConfig, StatusConfig, TlsPaths};
use crate::inbox::{run_blocking, Inbox, InboxError};
use auth::{Auth, AuthError, PeerCert, Principal, SESSION_COOKIE, SESSION_LIFETIME};
use dead::DeadLetterError;
use listener::{AdminListener, ListenerError};
use page::QuarantineView;

/// Most recent events a site page or `/v1/sites/{id}/events` returns by default.
pub const RECENT_EVENTS: usize = 50;
/// Most recent events one API call may ask for.
pub const MAX_RECENT_EVENTS: usize = 1000;
/// Quarantine entries shown on a site page (newest).
const PAGE_QUARANTINE: usize = 50;
/// Pause after a wrong token at the login form (slows down guessing).
const LOGIN_FAILURE_DELAY: Duration = Duration::from_millis(300);

/// Why an admin request failed; the one place admin errors map to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no site {0:?} is known to this relay")]
    UnknownSite(String),
    #[error("{0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the form token does not match this session; reload the page and try again")]
    Csrf,
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("relay store unavailable: {0}")]
    Store(#[from] InboxError),
    #[error("cannot render metrics: {0}")]
    Render(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::Auth(AuthError::Missing | AuthError::BadToken) => StatusCode::UNAUTHORIZED,
            AdminError::Auth(_) | AdminError::Csrf => StatusCode::FORBIDDEN,
            AdminError::UnknownSite(_)
            | AdminError::NotFound(_)
            | AdminError::DeadLetter(DeadLetterError::NotFound { .. }) => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::DeadLetter(DeadLetterError::Refused { .. }) => StatusCode::CONFLICT,
            AdminError::DeadLetter(DeadLetterError::Store(_)) | AdminError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AdminError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scanbridge-admin\""),
            );
        }
        response
    }
}

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminStartError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub inbox: Inbox,
    /// The pusher's wake handle: notified after a replay or skip.
    pub wake: Arc<Notify>,
    pub thresholds: StatusConfig,
    pub auth: Auth,
    /// Form token for pages opened with an admin certificate (no session to hold one).
    cert_csrf: Arc<String>,
}

impl AdminState {
    pub fn new(
        inbox: Inbox,
        wake: Arc<Notify>,
        thresholds: StatusConfig,
        admin: &AdminConfig,
    ) -> AdminState {
        AdminState {
            inbox,
            wake,
            thresholds,
            auth: Auth::new(admin.token.clone()),
            cert_csrf: Arc::new(auth::random_id()),
        }
    }
}

/// A started admin listener.
pub struct AdminHandle {
    pub local_addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Binds the admin listener and spawns it; it stops when `cancel` is cancelled.
pub async fn start(
    admin: &AdminConfig,
    tls: &TlsPaths,
    state: AdminState,
    cancel: CancellationToken,
) -> Result<AdminHandle, AdminStartError> {
    let tls = listener::tls_config(tls)?;
    let listener = AdminListener::bind(admin.listen, tls, router(state), cancel).await?;
    let local_addr = listener.local_addr()?;
    tracing::info!(addr = %local_addr, "admin listener on {local_addr}");
    Ok(AdminHandle {
        local_addr,
        task: tokio::spawn(listener.run()),
    })
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/sites", get(api_sites))
        .route("/v1/sites/{site}", get(api_site))
        .route("/v1/sites/{site}/events", get(api_events))
        .route("/v1/sites/{site}/quarantine", get(api_quarantine))
        .route("/v1/dead-letters", get(api_dead_letters))
        .route("/v1/dead-letters/{site}/{seq}", get(api_dead_letter))
        .route("/v1/dead-letters/{site}/{seq}/replay", post(api_replay))
        .route("/v1/dead-letters/{site}/{seq}/skip", post(api_skip))
        .route("/v1/trace", get(api_trace))
        .route("/metrics", get(get_metrics))
        .route("/", get(page_fleet))
        .route("/sites/{site}", get(page_site))
        .route(
            "/sites/{site}/dead-letters/{seq}/{action}",
            post(page_action),
        )
        .route("/login", get(page_login).post(post_login))
        .route("/logout", post(post_logout))
        .with_state(state)
}

fn authed(
    state: &AdminState,
    peer: &PeerCert,
    headers: &HeaderMap,
    allow_session: bool,
) -> Result<Principal, AdminError> {
    state
        .auth
        .authenticate(peer, headers, allow_session)
        .map_err(|e| {
            if matches!(e, AuthError::SiteCertificate(_) | AuthError::BadToken) {
                tracing::warn!(error = %e, "admin request refused");
            }
            AdminError::Auth(e)
        })
}

async fn blocking<T, F>(f: F) -> Result<T, AdminError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, InboxError> + Send + 'static,
{
    Ok(run_blocking(f).await?)
}

fn check_site(site: &str) -> Result<(), AdminError> {
    if scanbridge_protocol::is_valid_site_id(site) {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!("{site:?} is not a site id")))
    }
}

/// The classified client certificate the listener attached to the request.
async fn peer_cert(parts: &mut Parts, state: &AdminState) -> Result<PeerCert, Response> {
    Extension::<PeerCert>::from_request_parts(parts, state)
        .await
        .map(|Extension(peer)| peer)
        .map_err(IntoResponse::into_response)
}

/// An authenticated API request's credential: an admin certificate, the admin token, or (when
/// `SESSION`) a browser session. A handler takes it after its path and query, so those are
/// checked first; a refused credential answers 401/403 ([`AdminError`]).
struct Api<const SESSION: bool>;

impl<const SESSION: bool> FromRequestParts<AdminState> for Api<SESSION> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let peer = peer_cert(parts, state).await?;
        authed(state, &peer, &parts.headers, SESSION)
            .map(|_| Api)
            .map_err(IntoResponse::into_response)
    }
}

/// A page request's credential (certificate or session); without one the answer is the login
/// page (redirect) or 403 ([`page_auth`]).
struct Page(Principal);

impl FromRequestParts<AdminState> for Page {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let peer = peer_cert(parts, state).await?;
        page_auth(state, &peer, &parts.headers)
            .map(Page)
            .map_err(|r| *r)
    }
}

/// Every site's status now (off the async workers).
async fn all_sites(state: &AdminState, now: i64) -> Result<Vec<status::SiteStatus>, AdminError> {
    let inbox = state.inbox.clone();
    let t = state.thresholds;
    blocking(move || status::load_all(&inbox, now, &t)).await
}

// ---- JSON API ----

async fn api_sites(State(state): State<AdminState>, _: Api<true>) -> Result<Response, AdminError> {
    Ok(Json(all_sites(&state, crate::now_micros()).await?).into_response())
}

async fn load_site(state: &AdminState, site: &str) -> Result<status::SiteStatus, AdminError> {
    check_site(site)?;
    let inbox = state.inbox.clone();
    let t = state.thresholds;
    let name = site.to_string();
    blocking(move || status::load_one(&inbox, &name, crate::now_micros(), &t))
        .await?
        .ok_or_else(|| AdminError::UnknownSite(site.to_string()))
}

async fn api_site(
    State(state): State<AdminState>,
    Path(site): Path<String>,
    _: Api<true>,
) -> Result<Response, AdminError> {
    Ok(Json(load_site(&state, &site).await?).into_response())
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn api_events(
    State(state): State<AdminState>,
    Path(site): Path<String>,
    Query(q): Query<LimitQuery>,
    _: Api<true>,
) -> Result<Response, AdminError> {
    check_site(&site)?;
    let limit = q.limit.unwrap_or(RECENT_EVENTS).min(MAX_RECENT_EVENTS);
    let inbox = state.inbox.clone();
    let events = blocking(move || trace::recent(&inbox, &site, limit)).await?;
    Ok(Json(events).into_response())
}

fn quarantine_views(
    inbox: &Inbox,
    site: &str,
    limit: usize,
) -> Result<Vec<QuarantineView>, InboxError> {
    Ok(inbox
        .recent_quarantine(site, limit)?
        .into_iter()
        .map(|q| QuarantineView {
            seq: q.seq,
            received_at: status::rfc3339(q.received_at),
            reason: q.reason,
            raw: String::from_utf8_lossy(&q.raw).into_owned(),
        })
        .collect())
}

async fn api_quarantine(
    State(state): State<AdminState>,
    Path(site): Path<String>,
    Query(q): Query<LimitQuery>,
    _: Api<true>,
) -> Result<Response, AdminError> {
    check_site(&site)?;
    let limit = q.limit.unwrap_or(MAX_RECENT_EVENTS).min(MAX_RECENT_EVENTS);
    let inbox = state.inbox.clone();
    let list = blocking(move || quarantine_views(&inbox, &site, limit)).await?;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
struct SiteQuery {
    site: Option<String>,
}

async fn api_dead_letters(
    State(state): State<AdminState>,
    Query(q): Query<SiteQuery>,
    _: Api<true>,
) -> Result<Response, AdminError> {
    if let Some(site) = &q.site {
        check_site(site)?;
    }
    let inbox = state.inbox.clone();
    let list = blocking(move || dead::list(&inbox, q.site.as_deref())).await?;
    Ok(Json(list).into_response())
}

async fn api_dead_letter(
    State(state): State<AdminState>,
    Path((site, seq)): Path<(String, u64)>,
    _: Api<true>,
) -> Result<Response, AdminError> {
    check_site(&site)?;
    let inbox = state.inbox.clone();
    let found = blocking(move || dead::show_explained(&inbox, &site, seq))
        .await?
        .map_err(AdminError::NotFound)?;
    Ok(Json(found).into_response())
}

/// Runs a replay or skip off the async workers and wakes the pusher after it.
async fn dead_letter_action(
    state: &AdminState,
    site: String,
    seq: u64,
    action: &str,
    note: String,
    who: &str,
) -> Result<dead::ActionResult, AdminError> {
    check_site(&site)?;
    let inbox = state.inbox.clone();
    let replay = match action {
        "replay" => true,
        "skip" => false,
        other => {
            return Err(AdminError::NotFound(format!(
                "no dead-letter action {other:?} (replay or skip)"
            )))
        }
    };
    let (s, n) = (site.clone(), note.clone());
    let result = tokio::task::spawn_blocking(move || {
        if replay {
            dead::replay(&inbox, &s, seq)
        } else {
            dead::skip(&inbox, &s, seq, &n)
        }
    })
    .await
    .map_err(|e| AdminError::Store(InboxError::Worker(e.to_string())))??;
    state.wake.notify_one();
    tracing::info!(site = %site, seq, action, by = who, note = %note, "dead letter {action} requested by an operator");
    Ok(result)
}

fn who(p: &Principal) -> String {
    match p {
        Principal::Certificate(name) => format!("admin certificate {name}"),
        Principal::Token => "admin token".into(),
        Principal::Session { .. } => "browser session".into(),
    }
}

#[derive(Deserialize, Default)]
struct NoteBody {
    note: Option<String>,
}

fn note_from(body: &[u8]) -> Result<String, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let b: NoteBody = serde_json::from_slice(body).map_err(|e| {
        AdminError::BadRequest(format!("body must be JSON {{\"note\": \"...\"}}: {e}"))
    })?;
    Ok(b.note.unwrap_or_default())
}

/// `POST /v1/dead-letters/{site}/{seq}/{replay,skip}` with an optional JSON note. The credential
/// is checked after the body is read (as axum reads it before the handler runs).
async fn api_action(
    state: AdminState,
    peer: PeerCert,
    headers: HeaderMap,
    (site, seq): (String, u64),
    body: axum::body::Bytes,
    action: &str,
) -> Result<Response, AdminError> {
    let p = authed(&state, &peer, &headers, false)?;
    let note = note_from(&body)?;
    let r = dead_letter_action(&state, site, seq, action, note, &who(&p)).await?;
    Ok(Json(r).into_response())
}

async fn api_replay(
    State(state): State<AdminState>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    Path(key): Path<(String, u64)>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    api_action(state, peer, headers, key, body, "replay").await
}

async fn api_skip(
    State(state): State<AdminState>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    Path(key): Path<(String, u64)>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    api_action(state, peer, headers, key, body, "skip").await
}

#[derive(Deserialize)]
struct TraceQuery {
    site: Option<String>,
    seq: Option<u64>,
    barcode: Option<String>,
}

async fn api_trace(
    State(state): State<AdminState>,
    Query(q): Query<TraceQuery>,
    _: Api<true>,
) -> Result<Response, AdminError> {
    let inbox = state.inbox.clone();
    match (q.site, q.seq, q.barcode) {
        (Some(site), Some(seq), None) => {
            check_site(&site)?;
            let name = site.clone();
            let t = blocking(move || trace::trace_seq(&inbox, &name, seq)).await?;
            let t = t.ok_or_else(|| {
                AdminError::NotFound(format!("the relay has no event {site}/{seq} (not received yet, or never sent)"))
            })?;
            Ok(Json(t).into_response())
        }
        (None, None, Some(code)) if !code.is_empty() => {
            let t = blocking(move || trace::trace_barcode(&inbox, &code)).await?;
            Ok(Json(t).into_response())
        }
        _ => Err(AdminError::BadRequest(
            "give either site and seq, or barcode: /v1/trace?site=WH01&seq=42 or /v1/trace?barcode=4006381333931".into(),
        )),
    }
}

async fn get_metrics(
    State(state): State<AdminState>,
    _: Api<false>,
) -> Result<Response, AdminError> {
    let sites = all_sites(&state, crate::now_micros()).await?;
    let text = metrics::render(&sites).map_err(|e| AdminError::Render(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

// ---- pages ----

/// A page request's credential, or the answer to send instead (the login page, or 403).
fn page_auth(
    state: &AdminState,
    peer: &PeerCert,
    headers: &HeaderMap,
) -> Result<Principal, Box<Response>> {
    match state.auth.authenticate(peer, headers, true) {
        Ok(p) => Ok(p),
        Err(AuthError::Missing | AuthError::BadToken) => {
            Err(Box::new(Redirect::to("/login").into_response()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin page refused");
            Err(Box::new(
                (
                    StatusCode::FORBIDDEN,
                    Html(page::login_page(Some(&e.to_string()))),
                )
                    .into_response(),
            ))
        }
    }
}

fn csrf_of(state: &AdminState, p: &Principal) -> String {
    match p {
        Principal::Session { csrf } => csrf.clone(),
        _ => state.cert_csrf.as_str().to_string(),
    }
}

fn html(body: String) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        Html(body),
    )
        .into_response()
}

async fn page_fleet(State(state): State<AdminState>, _: Page) -> Result<Response, AdminError> {
    let now = crate::now_micros();
    let sites = all_sites(&state, now).await?;
    Ok(html(page::fleet_page(&sites, &status::rfc3339(now))))
}

#[derive(Deserialize)]
struct FlashQuery {
    done: Option<String>,
}

async fn page_site(
    State(state): State<AdminState>,
    Path(site): Path<String>,
    Query(q): Query<FlashQuery>,
    Page(p): Page,
) -> Result<Response, AdminError> {
    let status = load_site(&state, &site).await?;
    let inbox = state.inbox.clone();
    let (events, dead, quarantine) = blocking(move || {
        Ok((
            trace::recent(&inbox, &site, RECENT_EVENTS)?,
            dead::list(&inbox, Some(&site))?,
            quarantine_views(&inbox, &site, PAGE_QUARANTINE)?,
        ))
    })
    .await?;
    Ok(html(page::site_page(
        &status,
        &events,
        &dead,
        &quarantine,
        &csrf_of(&state, &p),
        q.done.as_deref(),
    )))
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: String,
    #[serde(default)]
    note: String,
}

async fn page_action(
    State(state): State<AdminState>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    Path((site, seq, action)): Path<(String, u64, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, AdminError> {
    let p = match page_auth(&state, &peer, &headers) {
        Ok(p) => p,
        Err(r) => return Ok(*r),
    };
    if !auth::constant_time_eq(form.csrf.as_bytes(), csrf_of(&state, &p).as_bytes()) {
        return Err(AdminError::Csrf);
    }
    let done =
        match dead_letter_action(&state, site.clone(), seq, &action, form.note, &who(&p)).await {
            Ok(r) => format!("{} {}/{}: {}", r.action, r.site, r.seq, r.detail),
            Err(AdminError::DeadLetter(e)) => e.to_string(),
            Err(e) => return Err(e),
        };
    let target = format!("/sites/{site}?done={}", percent_encode(&done));
    Ok(Redirect::to(&target).into_response())
}

/// Percent-encodes everything but unreserved characters (for a query value).
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn page_login() -> Response {
    html(page::login_page(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn post_login(
    State(state): State<AdminState>,
    Extension(peer): Extension<PeerCert>,
    Form(form): Form<LoginForm>,
) -> Response {
    if let PeerCert::Site(site) = &peer {
        tracing::warn!(site = %site, "login attempt over a site certificate refused");
        return (
            StatusCode::FORBIDDEN,
            Html(page::login_page(Some(
                "a site certificate cannot log in here",
            ))),
        )
            .into_response();
    }
    if !state.auth.token_matches(form.token.trim()) {
        tracing::warn!("admin login with a wrong token");
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        return (
            StatusCode::UNAUTHORIZED,
            Html(page::login_page(Some("That is not the admin token."))),
        )
            .into_response();
    }
    let (id, _csrf) = state.auth.new_session();
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn post_logout(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::cookie(&headers, SESSION_COOKIE) {
        state.auth.end_session(id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "sb_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
    );
    response
}
