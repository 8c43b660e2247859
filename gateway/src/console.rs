//! The account console: plain HTML, CSS and ES modules from
//! `gateway/console/`, embedded in the binary and served at `/` (the page)
//! and `/console/<file>` (everything it loads), under a Content-Security-
//! Policy that allows only the gateway's own origin: no inline script or
//! style, images from the page itself (`data:`, for the 2FA QR code).

use std::sync::LazyLock;

/// One file of the console.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `gateway/console/`.
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal: $kind:expr),* $(,)?) => {
        &[$(Asset { path: $path, content_type: $kind, body: include_bytes!(concat!("../console/", $path)) }),*]
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console (a test checks the folder holds no other).
pub static ASSETS: &[Asset] = assets![
    "index.html": HTML,
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "app.js": JS,
    "api.js": JS,
    "ui.js": JS,
    "pages/auth.js": JS,
    "pages/account.js": JS,
    "pages/security.js": JS,
    "pages/data.js": JS,
    "pages/notifications.js": JS,
    "pages/admin.js": JS,
];

/// The console's policy: its own origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The file served at `path` (`/` is the page), if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    let file = if path == "/" {
        "index.html"
    } else {
        path.strip_prefix("/console/")?
    };
    ASSETS.iter().find(|asset| asset.path == file)
}

/// The entity tag of every file: the build's console as a whole, so a
/// changed file never meets a page of another build.
pub fn etag() -> &'static str {
    static TAG: LazyLock<String> = LazyLock::new(|| {
        // FNV-1a: stable across runs and builds of the same files.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in ASSETS.iter().flat_map(|a| a.path.bytes().chain(a.body.iter().copied())) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"console-{hash:016x}\"")
    });
    &TAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_console_folder_is_served_and_nothing_else() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    on_disk.push(path.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn the_page_is_at_the_root_and_its_files_under_console() {
        assert_eq!(find("/").unwrap().path, "index.html");
        assert_eq!(find("/console/pages/auth.js").unwrap().content_type, JS);
        assert_eq!(find("/console/index.html").unwrap().content_type, HTML);
        for missing in [
            "/index.html",
            "/console/",
            "/console/../Cargo.toml",
            "/console/nothing.js",
            "/api/v1/users",
        ] {
            assert!(find(missing).is_none(), "{missing}");
        }
    }

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        let page = std::str::from_utf8(find("/").unwrap().body).unwrap();
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "style attribute");
        for script in page.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src=\"/console/"), "a script not from /console/: {tag}");
        }
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "another origin"
        );
        let tag = etag();
        assert!(tag.starts_with("\"console-") && tag.len() == 26, "{tag}");
    }
}
