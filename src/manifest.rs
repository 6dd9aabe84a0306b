//! The Teams app package: `manifest/manifest.template.json` and the two icons, built into the
//! binary, filled with the app id, the public host and the version, and zipped.

use std::io::Write as _;
use std::path::Path;

/// The manifest template (placeholders `{{APP_ID}}`, `{{DOMAIN}}`, `{{VERSION}}`).
pub(crate) const TEMPLATE: &str = include_str!("../manifest/manifest.template.json");
/// The 192x192 colour icon.
pub(crate) const COLOR_ICON: &[u8] = include_bytes!("../manifest/color.png");
/// The 32x32 outline icon.
pub(crate) const OUTLINE_ICON: &[u8] = include_bytes!("../manifest/outline.png");

/// Why the package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A value is missing or unusable.
    #[error("{0}")]
    Invalid(String),
    /// Writing the zip failed.
    #[error("cannot write the package: {0}")]
    Io(#[from] std::io::Error),
    /// The zip library failed.
    #[error("cannot write the package: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// The manifest JSON for `app_id` served at `host`, version `version`.
pub fn render(app_id: &str, host: &str, version: &str) -> Result<String, ManifestError> {
    let safe = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
    if !safe(app_id) || !safe(host) || !safe(version) {
        return Err(ManifestError::Invalid("app id, host and version may hold only letters, digits, `-` and `.`".into()));
    }
    let text = TEMPLATE.replace("{{APP_ID}}", app_id).replace("{{DOMAIN}}", host).replace("{{VERSION}}", version);
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| ManifestError::Invalid(format!("the manifest template is not valid JSON: {e}")))?;
    Ok(text)
}

/// Writes the zip (manifest.json, color.png, outline.png at its root) to `out`.
pub(crate) fn write_package(out: &Path, app_id: &str, host: &str, version: &str) -> Result<(), ManifestError> {
    let manifest = render(app_id, host, version)?;
    let file = std::fs::File::create(out)?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in [("manifest.json", manifest.as_bytes()), ("color.png", COLOR_ICON), ("outline.png", OUTLINE_ICON)] {
        zip.start_file(name, options)?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_filled_everywhere() {
        let text = render("9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3", "bot.contoso.com", "1.2.3").unwrap();
        assert!(!text.contains("{{"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["id"], "9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3");
        assert_eq!(json["bots"][0]["botId"], "9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3");
        assert_eq!(json["webApplicationInfo"]["resource"], "api://botid-9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3");
        assert!(json["validDomains"].as_array().unwrap().contains(&serde_json::json!("bot.contoso.com")));
        assert_eq!(json["version"], "1.2.3");
    }

    #[test]
    fn injected_values_are_refused() {
        assert!(render("x\", \"evil\": \"", "bot.contoso.com", "1.0.0").is_err());
        assert!(render("id", "bot.contoso.com/path", "1.0.0").is_err());
    }
}
