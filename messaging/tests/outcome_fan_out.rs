//! A conversion outcome goes to every channel's queue (e-mail and webhooks) on both transports:
//! through the topic exchange on RabbitMQ, in one transaction on the embedded queue.

use lapin::options::{BasicAckOptions, BasicGetOptions};
use messaging::embedded::EmbeddedQueue;
use messaging::events::{self, ConversionFailed, ConversionSucceeded, Payload, VideoUploaded};
use messaging::{BrokerConfig, PublishError, Publisher};
use test_support::{TestBroker, configs, temp_dir};

fn outcome(n: u32) -> events::Event {
    let payload = if n.is_multiple_of(2) {
        Payload::ConversionSucceeded(ConversionSucceeded {
            job_id: format!("job-{n}"),
            ..Default::default()
        })
    } else {
        Payload::ConversionFailed(ConversionFailed {
            job_id: format!("job-{n}"),
            ..Default::default()
        })
    };
    events::new_event(payload)
}

/// The job ids of the events now on `queue` (taken off it).
async fn amqp_job_ids(channel: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let event = events::decode(&message.delivery.data, None).unwrap();
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        ids.push(job_id(&event));
    }
    ids
}

fn job_id(event: &events::Event) -> String {
    match event.payload.as_ref().unwrap() {
        Payload::ConversionSucceeded(succeeded) => succeeded.job_id.clone(),
        Payload::ConversionFailed(failed) => failed.job_id.clone(),
        other => panic!("not an outcome: {other:?}"),
    }
}

async fn publish_outcomes_and_a_stray(config: &BrokerConfig) -> Publisher {
    let publisher = Publisher::new(config, "test");
    for n in 0..4 {
        publisher.publish_outcome(&outcome(n)).await.unwrap();
    }
    let stray = events::new_event(Payload::VideoUploaded(VideoUploaded::default()));
    let refused = publisher.publish_outcome(&stray).await.unwrap_err();
    assert!(
        matches!(
            refused,
            PublishError::NotAccepted("not a conversion outcome")
        ),
        "{refused:?}"
    );
    publisher
}

#[tokio::test]
async fn on_rabbitmq_each_outcome_reaches_the_mail_and_the_webhook_queue_once() {
    let broker = TestBroker::create().await.unwrap();
    let dir = temp_dir();
    let config = configs::amqp(&broker, dir.path());
    publish_outcomes_and_a_stray(&config).await;
    let connection = broker.connect().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let expected = ["job-0", "job-1", "job-2", "job-3"];
    for queue in config.queues.outcome_queues() {
        assert_eq!(amqp_job_ids(&channel, queue).await, expected, "{queue}");
    }
    assert!(
        amqp_job_ids(&channel, &config.queues.video_queue)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn on_the_embedded_queue_each_outcome_reaches_the_mail_and_the_webhook_queue_once() {
    let dir = temp_dir();
    let config = configs::embedded(dir.path());
    publish_outcomes_and_a_stray(&config).await;
    let queue = EmbeddedQueue::open(&config.embedded_queue_path())
        .await
        .unwrap();
    for name in config.queues.outcome_queues() {
        let mut ids = Vec::new();
        while let Some(leased) = queue
            .lease(name, std::time::Duration::from_secs(30))
            .await
            .unwrap()
        {
            ids.push(job_id(&events::decode(&leased.body, None).unwrap()));
            queue.ack(&leased).await.unwrap();
        }
        assert_eq!(ids, ["job-0", "job-1", "job-2", "job-3"], "{name}");
    }
    assert_eq!(queue.depth(&config.queues.video_queue).await.unwrap(), 0);
}
