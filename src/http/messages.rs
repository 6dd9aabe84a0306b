//! `POST /api/messages`: a verified activity handed to the bot, its answer mapped to HTTP.

use actix_web::{HttpResponse, ResponseError as _, web};

use super::ApiError;
use crate::bot::{Bot, BotResponse};
use crate::botframework::inbound::VerifiedActivity;

/// Answers one Teams activity (the extractor has already authenticated it).
pub(super) async fn messages(activity: VerifiedActivity, bot: web::Data<Bot>) -> HttpResponse {
    match bot.handle(&activity).await {
        BotResponse::Ack => HttpResponse::Ok().finish(),
        BotResponse::Invoke(body) => HttpResponse::Ok().json(body),
        BotResponse::InvokeStatus(status, body) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK)).json(body)
        }
        BotResponse::Failed => ApiError::Internal.error_response(),
    }
}
