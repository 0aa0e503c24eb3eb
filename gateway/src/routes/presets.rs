//! `GET /presets`: the named sets of audio options an upload can start from, so clients (the
//! page, the CLI) offer what the server knows instead of a copy of their own.

use audio_options::{AudioOptions, PRESETS};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// A preset and the options it stands for.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresetView {
    /// What an upload names it (`preset=…`).
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// The options it sets; options given beside it override these.
    pub options: AudioOptions,
}

/// Every preset.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresetList {
    /// The presets.
    pub presets: Vec<PresetView>,
}

/// Lists the presets.
#[utoipa::path(get, path = "/presets", tag = "files",
    responses((status = 200, description = "Every preset", body = PresetList)))]
pub async fn list_presets() -> Json<PresetList> {
    Json(PresetList {
        presets: PRESETS
            .iter()
            .map(|preset| PresetView {
                name: preset.name,
                description: preset.description,
                options: preset.options(),
            })
            .collect(),
    })
}
