//! The web console: one page, one script and one stylesheet, compiled into the binary and
//! served by the admin port at `/`. The page draws everything from the JSON API (`/api/v1/`),
//! polled once a second, so it shows nothing the API does not and needs no server-side state:
//! rates and latency quantiles are the differences between two polls' counters and histogram
//! buckets, computed in the browser.
//!
//! No framework and no third-party script: the page must work on a broker with no internet
//! access, and [`CONSOLE_HEADERS`] forbid loading anything from elsewhere.

use super::http::{
    Asset, Response, Status, CONSOLE_HEADERS, CONTENT_TYPE_CSS, CONTENT_TYPE_HTML,
    CONTENT_TYPE_JAVASCRIPT,
};

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The file `asset` names.
pub fn response(asset: Asset) -> Response {
    let (content_type, body) = match asset {
        Asset::Page => (CONTENT_TYPE_HTML, PAGE),
        Asset::Script => (CONTENT_TYPE_JAVASCRIPT, SCRIPT),
        Asset::Style => (CONTENT_TYPE_CSS, STYLE),
    };
    Response {
        status: Status::Ok,
        content_type,
        headers: CONSOLE_HEADERS,
        body: body.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        // The page names exactly the script and stylesheet the routes serve, and nothing
        // from another origin (the policy would block it, leaving a broken page).
        assert!(PAGE.contains(r#"src="/console.js""#));
        assert!(PAGE.contains(r#"href="/console.css""#));
        for text in [PAGE, SCRIPT, STYLE] {
            // The one absolute URL is SVG's namespace name, which is never fetched.
            let text = text.replace("'http://www.w3.org/2000/svg'", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        let page = response(Asset::Page);
        let text = String::from_utf8(page.encode(false, true)).expect("utf-8");
        assert!(text.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(text.contains("\r\nContent-Security-Policy: default-src 'self';"));
    }
}
