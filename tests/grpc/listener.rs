//! The gRPC listener itself: health for the server and both services,
//! shutdown within its grace while a proxy holds a connection, max_connections.

use super::*;

#[tokio::test]
async fn grpc_health_reports_serving_for_the_server_and_both_services() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let s = server(EDGE).await;
    let h = HealthClient::new(channel(&s).await);
    for service in [
        "",
        "envoy.service.ratelimit.v3.RateLimitService",
        "envoy.service.auth.v3.Authorization",
    ] {
        // `eventually` fails the test unless the service says SERVING in time.
        eventually(Duration::from_secs(5), || {
            let mut h = h.clone();
            async move {
                let r = h
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await;
                matches!(r, Ok(r) if r.get_ref().status == 1)
            }
        })
        .await;
    }
}

#[tokio::test]
async fn the_server_stops_well_within_its_grace_while_a_proxy_holds_a_grpc_connection() {
    let s = server(EDGE).await;
    let ch = channel(&s).await;
    let mut c = RateLimitServiceClient::new(ch.clone());
    ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.9")])],
        0,
    )
    .await;
    // The channel stays open, as Envoy's pooled connection would: shutdown
    // sends it GOAWAY instead of waiting for it to go (grace is 10 s).
    tokio::time::timeout(Duration::from_secs(5), s.stop())
        .await
        .expect("stopped within 5 s");
    drop(ch);
}

#[tokio::test]
async fn at_max_connections_a_new_grpc_connection_waits_for_a_free_slot() {
    let redis = shared_redis().url();
    let config = format!("{GRPC}max_connections = 3\n{EDGE}");
    let s = TestServer::start(&config, Some(&redis), &unique_prefix("grpc-max")).await;
    let open = || async {
        metric(
            &scrape(&s).await,
            "tollgate_open_connections",
            &[("listener", "grpc")],
        )
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = RateLimitServiceClient::new(channel(&s).await);
        ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.1.1")])],
            0,
        )
        .await;
        held.push(c);
    }
    assert_eq!(open().await, 3.0);
    // A fourth connection is not accepted while the three are open...
    let waiting = tokio::spawn({
        let ch = channel(&s).await; // TCP completes in the kernel's backlog
        async move {
            let mut c = RateLimitServiceClient::new(ch);
            ask(
                &mut c,
                "edge",
                vec![desc(&[("remote_address", "10.0.1.2")])],
                0,
            )
            .await
        }
    });
    assert_eq!(open().await, 3.0);
    assert!(!waiting.is_finished());
    // ...and is served once one of them closes.
    held.pop();
    let r = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
}
