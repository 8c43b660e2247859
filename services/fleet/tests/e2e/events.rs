//! The RabbitMQ backbone with the real binary: the fleet's events reach the
//! exchange, and events on the exchange reach every process of the fleet.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use fleet_kit::{
    amqp::{AmqpPublisher, AmqpSettings},
    events::{EventPublisher, new_event},
    testing::backend_available,
    time::to_timestamp,
};
use fleet_proto::events::v1::{Event, SessionRevoked, event::Payload};
use futures::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use prost::Message;
use reqwest::Method;

use crate::harness::{Api, Fleet, Proto, assert_problem, broker_names};

#[tokio::test]
async fn events_travel_through_rabbitmq_both_ways() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let settings = AmqpSettings {
        exchange: format!("fleet.test.{id}"),
        dead_letter_exchange: format!("fleet.test.{id}.dead"),
        ..AmqpSettings::default()
    };
    let _names = broker_names(&settings.exchange);
    // A queue of the test's own on the fleet's exchange.
    let connection = Connection::connect(&settings.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            settings.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), private, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            settings.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let fleet = Fleet::start_with(&[
        ("FLEET_AMQP_URL", settings.url.as_str()),
        ("FLEET_EVENTS__EXCHANGE", settings.exchange.as_str()),
        (
            "FLEET_EVENTS__DEAD_LETTER_EXCHANGE",
            settings.dead_letter_exchange.as_str(),
        ),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http2);
    let (user, token) = api.signed_in("ada@example.com", "Ada").await;

    // Out: the registration's user.created reaches the exchange.
    let created = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let delivery = seen.next().await.unwrap().unwrap();
            delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
            let event = Event::decode(delivery.data.as_slice()).unwrap();
            if event.r#type == "user.created" {
                return event;
            }
        }
    })
    .await
    .expect("user.created on RabbitMQ");
    assert_eq!(created.subject_user_id, user["id"].as_str().unwrap());

    // In: a session.revoked from elsewhere ends the token at this gateway.
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let revoked = new_event(
        "test",
        uuid::Uuid::parse_str(user["id"].as_str().unwrap()).ok(),
        Utc::now(),
        Payload::SessionRevoked(SessionRevoked {
            session_id: claims["sid"].as_str().unwrap().to_string(),
            reason: "revoked".into(),
            tokens_expire_at: Some(to_timestamp(Utc::now() + chrono::Duration::minutes(15))),
        }),
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/users/me", Some(&token), None)
            .await
            .status,
        200
    );
    AmqpPublisher::new(settings.clone()).publish(&revoked).await.unwrap();
    let mut status = 200;
    for _ in 0..100 {
        let answer = api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await;
        status = answer.status;
        if status == 401 {
            assert_problem(&answer, 401);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401, "the revocation arrived through RabbitMQ");
    drop(fleet);
    for exchange in [&settings.exchange, &settings.dead_letter_exchange] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
}
