//! The console: a web page at `GET /console` where policy authors and admins
//! see, try and change their rules, the interactive API reference at
//! `GET /docs`, and `GET /` sending a browser to the console.
//!
//! Every asset lives in `host/console/` and is embedded at build time, so
//! the binary serves the whole page with no build step and no CDN. The page
//! is static HTML plus one vanilla script that calls the JSON API with the
//! token the user signs in with (kept in `sessionStorage`, sent as a
//! header). These routes are pages, not API operations, so they are not in
//! the OpenAPI document.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::ApiError;

/// The console's Content-Security-Policy: scripts, styles and fetches from
/// this origin only, no inline script or `eval`, never framed.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The API reference's policy: Swagger UI also sets `style` attributes from
/// its script (allowed by `style-src-attr`), and inlines its icons as data:
/// images; its scripts still come from this origin only.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file: its bytes and media type.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The files under `/console/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/console.js"),
    },
    Asset { name: "console.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../console/console.css") },
    Asset { name: "docs.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../console/docs.js") },
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/vendor/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/vendor/swagger-ui/swagger-ui.css"),
    },
];

const CONSOLE_HTML: &str = include_str!("../../console/index.html");
const DOCS_HTML: &str = include_str!("../../console/docs.html");

/// The console's routes; they need no state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(root))
        .route("/console", get(|| async { page(CONSOLE_HTML, CONSOLE_CSP) }))
        .route("/docs", get(|| async { page(DOCS_HTML, DOCS_CSP) }))
        .route("/console/assets/{name}", get(asset))
}

/// `GET /`: a browser (one that accepts HTML) goes to the console; any other
/// client gets the usual 404 problem, as before.
async fn root(headers: HeaderMap) -> Response {
    let wants_html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        Redirect::to("/console").into_response()
    } else {
        ApiError::NotFound("no route matches this path".into()).into_response()
    }
}

fn page(html: &'static str, csp: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    secure(response.headers_mut(), csp);
    // The page itself is small and changes with the binary: always fresh.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::NotFound(format!("console asset {name} was not found")).into_response();
    };
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response();
    secure(response.headers_mut(), CONSOLE_CSP);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The headers every console response carries.
fn secure(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
