//! Image references and registry keys.
//!
//! Invariants: a reference without tag or digest means `:latest`; a
//! reference's first component is its registry only when it looks like a
//! host (a `.` or `:`, or `localhost`), else the registry is Docker Hub;
//! Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`, …) are
//! one key, `docker.io`, the one registry credentials are stored under.

/// Adds `:latest` to a reference with neither tag nor digest.
pub(crate) fn normalize_image_reference(image: &str) -> String {
    let image = image.trim();
    if image.contains('@') {
        return image.to_owned();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The registry host of a reference: its first component when that looks
/// like a host (has `.` or `:`, or is `localhost`), else Docker Hub.
pub(crate) fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// A credentials key: the host alone, Docker Hub's aliases folded together.
pub(crate) fn registry_key(host: &str) -> String {
    let host = host
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

/// Repository part of a normalised reference (`host/repo:tag` → `host/repo`);
/// Docker Hub names get their implicit `docker.io/library/` dropped as the
/// Engine does in `RepoDigests`.
pub(super) fn repository_of(reference: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let repo = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    repo.strip_prefix("docker.io/")
        .map(|r| r.strip_prefix("library/").unwrap_or(r))
        .unwrap_or(repo)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_get_latest_and_a_registry() {
        assert_eq!(normalize_image_reference("busybox"), "busybox:latest");
        assert_eq!(
            normalize_image_reference("127.0.0.1:1/nope"),
            "127.0.0.1:1/nope:latest"
        );
        assert_eq!(
            normalize_image_reference("127.0.0.1:5000/a/b:1.2"),
            "127.0.0.1:5000/a/b:1.2"
        );
        assert_eq!(
            normalize_image_reference("busybox@sha256:abcd"),
            "busybox@sha256:abcd"
        );
        assert_eq!(registry_host("busybox:latest"), "docker.io");
        assert_eq!(registry_host("library/busybox:latest"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/a:1"), "localhost");
        assert_eq!(registry_host("ghcr.io/x/y:1"), "ghcr.io");
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(
            registry_key("Registry.Example:5000"),
            "registry.example:5000"
        );
        assert_eq!(repository_of("busybox:latest"), "busybox");
        assert_eq!(repository_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b");
    }
}
