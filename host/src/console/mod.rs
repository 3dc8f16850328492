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

/// The Content-Security-Policy of every console and docs response:
/// scripts, styles, fonts and fetches from this origin only, no inline
/// script or style element and no `eval`, never framed. Swagger UI runs
/// under it too: its icons are data: images, and the styles it sets from
/// script (the CSSOM) are not inline styles in CSP's sense.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
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
    Asset {
        name: "lib.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/lib.js"),
    },
    Asset {
        name: "trace.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/trace.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/console.css"),
    },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("../../console/favicon.svg") },
    Asset {
        name: "docs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/docs.js"),
    },
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
        .route("/console", get(|| async { page(CONSOLE_HTML) }))
        .route("/docs", get(|| async { page(DOCS_HTML) }))
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

fn page(html: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    secure(response.headers_mut());
    // The page itself is small and changes with the binary: always fresh.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::NotFound(format!("console asset {name} was not found")).into_response();
    };
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response();
    secure(response.headers_mut());
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The headers every console response carries.
fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(uri: &str, accept: Option<&str>) -> Response {
        let mut request = Request::get(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        router::<()>().oneshot(request.body(Body::empty()).expect("a valid request")).await.expect("infallible")
    }

    #[tokio::test]
    async fn a_browser_at_the_root_is_sent_to_the_console_and_an_api_client_gets_the_usual_404() {
        let res = get("/", Some("text/html,application/xhtml+xml,*/*;q=0.8")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[header::LOCATION], "/console");
        let res = get("/", Some("application/json")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    }

    #[tokio::test]
    async fn the_pages_and_their_assets_carry_the_strict_csp_and_refuse_framing() {
        for uri in ["/console", "/docs", "/console/assets/console.js", "/console/assets/swagger-ui-bundle.js"] {
            let res = get(uri, None).await;
            assert_eq!(res.status(), StatusCode::OK, "{uri}");
            let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
            assert!(csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
            assert!(!csp.contains("unsafe"), "{uri}: {csp}");
            assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_problem() {
        let res = get("/console/assets/../../Cargo.toml", None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = get("/console/assets/nothing.js", None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_pages_load_nothing_inline_and_nothing_from_another_origin() {
        for html in [CONSOLE_HTML, DOCS_HTML] {
            assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
            assert!(!html.contains("http://") && !html.contains("https://"), "no other origin");
            assert!(!html.contains(" onclick=") && !html.contains(" onload="), "no inline handlers");
        }
        for src in html_refs(CONSOLE_HTML).chain(html_refs(DOCS_HTML)) {
            let name = src.strip_prefix("/console/assets/").unwrap_or_else(|| panic!("{src} is not an embedded asset"));
            assert!(ASSETS.iter().any(|a| a.name == name), "{src} is not embedded");
        }
    }

    #[test]
    fn the_sign_in_form_has_nothing_a_failed_script_could_put_in_a_url() {
        // Without its script the form would submit natively: its inputs
        // have no name (so nothing is serialized), it posts, and CSP's
        // form-action 'none' blocks the submission anyway.
        let form =
            CONSOLE_HTML.split("<form id=\"signin\"").nth(1).and_then(|f| f.split("</form>").next()).expect("the form");
        assert!(form.contains("method=\"post\""), "{form}");
        assert!(!form.contains(" name="), "{form}");
        assert!(CSP.contains("form-action 'none'"));
    }

    #[test]
    fn every_module_the_console_imports_is_embedded() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js") && !a.name.starts_with("swagger")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for import in text.split("from \"./").skip(1) {
                let name = import.split('"').next().expect("a quoted path");
                assert!(ASSETS.iter().any(|a| a.name == name), "{} imports {name}, which is not embedded", asset.name);
            }
        }
    }

    fn html_refs(html: &'static str) -> impl Iterator<Item = &'static str> {
        html.split(['"']).filter(|s| s.starts_with("/console/assets/"))
    }
}
