//! The `cacertfile` query parameter of the backends' URLs (`amqps://`,
//! `rediss://`), named as RabbitMQ's own clients name it: a PEM file of the
//! CA certificates that sign the server's certificate, for a server whose CA
//! is not a public one. It is taken out of the URL before the URL is used.

use anyhow::Context;

/// The URL without its `cacertfile` parameter, and the contents of the file
/// it names.
pub fn split(raw: &str) -> anyhow::Result<(String, Option<Vec<u8>>)> {
    let (url, path) = split_path(raw)?;
    let pem = match path {
        Some(path) => Some(std::fs::read(&path).with_context(|| format!("reading cacertfile {path}"))?),
        None => None,
    };
    Ok((url, pem))
}

fn split_path(raw: &str) -> anyhow::Result<(String, Option<String>)> {
    if !raw.contains("cacertfile=") {
        return Ok((raw.to_string(), None));
    }
    let mut url = url::Url::parse(raw).context("not a URL")?;
    let mut path = None;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(key, value)| {
            if key == "cacertfile" {
                path = Some(value.into_owned());
                None
            } else {
                Some((key.into_owned(), value.into_owned()))
            }
        })
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((url.to_string(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cacertfile_is_taken_out_of_the_url() {
        let (url, path) = split_path("amqps://u:p@broker:5671/%2f?cacertfile=%2Fetc%2Fca.pem&heartbeat=10").unwrap();
        assert_eq!(
            (url.as_str(), path.as_deref()),
            ("amqps://u:p@broker:5671/%2f?heartbeat=10", Some("/etc/ca.pem"))
        );
        let (url, path) = split_path("rediss://cache:6380/?cacertfile=/etc/ca.pem").unwrap();
        assert_eq!(
            (url.as_str(), path.as_deref()),
            ("rediss://cache:6380/", Some("/etc/ca.pem"))
        );
        let plain = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert_eq!(split_path(plain).unwrap(), (plain.to_string(), None));
        assert!(
            split("rediss://cache/?cacertfile=/nonexistent/ca.pem").is_err(),
            "a missing file is an error"
        );
    }
}
