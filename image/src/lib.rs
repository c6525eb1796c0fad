//! boltbox-image: builds the flashable image from Debian packages and boot-tests it in QEMU.

/// The compressed image's file name for a boltbox version: `boltbox-<version>-arm64.img.xz`.
pub fn artifact_name(version: &str) -> String {
    format!("boltbox-{version}-arm64.img.xz")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_artifact_is_named_by_version_and_arch() {
        assert_eq!(super::artifact_name("0.1.0"), "boltbox-0.1.0-arm64.img.xz");
    }
}
