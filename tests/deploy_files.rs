//! The shipped files that no engine here can run (docker compose, Envoy,
//! Traefik, Kubernetes, systemd) at least parse and say what they promise.

use serde::Deserialize;
use serde_yaml::Value;

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("YAML does not parse: {e}"))
}

#[test]
fn docker_compose_has_redis_with_aof_two_replicas_nginx_and_an_app() {
    let c = yaml(include_str!("../docker-compose.yml"));
    let s = &c["services"];
    let redis_cmd = serde_yaml::to_string(&s["redis"]["command"]).unwrap();
    assert!(
        redis_cmd.contains("--appendonly") && redis_cmd.contains("yes"),
        "{redis_cmd}"
    );
    for replica in ["tollgate1", "tollgate2"] {
        assert_eq!(s[replica]["build"].as_str(), Some("."), "{replica}");
        assert!(s[replica]["environment"]["TOLLGATE_REDIS_URL"]
            .as_str()
            .unwrap()
            .starts_with("redis://redis"));
    }
    assert_eq!(
        s["nginx"]["volumes"][0].as_str(),
        Some("./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro"),
        "compose uses the shipped nginx config"
    );
    assert!(s["app"].is_mapping());
    let listens: Vec<&str> = ["tollgate1", "tollgate2"]
        .iter()
        .map(|r| s[*r]["environment"]["TOLLGATE_LISTEN"].as_str().unwrap())
        .collect();
    let nginx = include_str!("../deploy/nginx/nginx.conf");
    for l in listens {
        assert!(
            nginx.contains(&format!("server {l}")),
            "nginx.conf lacks replica {l}"
        );
    }
}

#[test]
fn the_dockerfile_is_multi_stage() {
    let d = include_str!("../Dockerfile");
    assert_eq!(d.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(d.contains("COPY --from=build"));
}

#[test]
fn envoy_uses_ext_authz_http_with_an_explicit_timeout_and_failure_mode() {
    let e = yaml(include_str!("../deploy/envoy/envoy.yaml"));
    let hcm =
        &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let authz = &hcm["http_filters"][0]["typed_config"];
    assert_eq!(authz["failure_mode_allow"].as_bool(), Some(false));
    assert_eq!(
        authz["http_service"]["path_prefix"].as_str(),
        Some("/check")
    );
    assert_eq!(
        authz["http_service"]["server_uri"]["timeout"].as_str(),
        Some("0.25s")
    );
}

#[test]
fn traefik_uses_forward_auth_to_check() {
    let d = yaml(include_str!("../deploy/traefik/dynamic.yml"));
    let fa = &d["http"]["middlewares"]["tollgate"]["forwardAuth"];
    assert!(fa["address"].as_str().unwrap().ends_with("/check"));
    assert_eq!(fa["trustForwardHeader"].as_bool(), Some(false));
    yaml(include_str!("../deploy/traefik/traefik.yml"));
}

#[test]
fn kubernetes_sidecar_has_probes_resources_grace_and_a_secret_token() {
    let text = include_str!("../deploy/k8s/tollgate.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "ConfigMap", "Deployment"]);
    let pod = &docs[2]["spec"]["template"]["spec"];
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 10,
        "longer than shutdown_grace"
    );
    let tg = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tollgate")
        .unwrap();
    assert_eq!(
        tg["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/livez")
    );
    assert_eq!(
        tg["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(tg["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        tg["env"][0]["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("tollgate-admin")
    );
    // The embedded config is a valid tollgate config.
    let toml = docs[1]["data"]["tollgate.toml"].as_str().unwrap();
    tollgate::config::parse("k8s", toml, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_systemd_unit_is_hardened_and_reloads_with_sighup() {
    let unit = include_str!("../deploy/systemd/tollgate.service");
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "missing {directive}"
        );
    }
}

/// The cluster named `name` in an Envoy config.
fn envoy_cluster<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["static_resources"]["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// tollgate's gRPC cluster speaks HTTP/2 and is health-checked with grpc.health.v1.
fn assert_grpc_cluster(e: &Value) {
    let c = envoy_cluster(e, "tollgate_grpc");
    let opts = &c["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert!(opts["explicit_http_config"]["http2_protocol_options"].is_mapping());
    assert!(c["health_checks"][0]["grpc_health_check"].is_mapping());
}

#[test]
fn envoy_rls_config_sends_descriptors_that_its_tollgate_rules_answer() {
    let text = include_str!("../deploy/envoy/envoy-rls.yaml");
    let e = yaml(text);
    assert_grpc_cluster(&e);
    let hcm =
        &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let rl = &hcm["http_filters"][0]["typed_config"];
    assert_eq!(
        rl["@type"].as_str(),
        Some("type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit")
    );
    assert_eq!(
        rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"].as_str(),
        Some("tollgate_grpc")
    );
    assert_eq!(
        rl["rate_limit_service"]["transport_api_version"].as_str(),
        Some("V3")
    );
    assert_eq!(rl["enable_x_ratelimit_headers"].as_str(), Some("OFF"));
    let domain = rl["domain"].as_str().unwrap();

    // The tollgate rules written in the header comment are a valid config...
    let toml: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .map(|l| format!("{l}\n"))
        .collect();
    let cfg = tollgate::config::parse("envoy-rls.yaml", &toml, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    // ...and every descriptor the routes build falls under one of them.
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_sequence()
        .unwrap();
    let mut answered = 0;
    for route in routes {
        for limit in route["route"]["rate_limits"].as_sequence().unwrap() {
            let entries: Vec<(String, String)> = limit["actions"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| {
                    if a["remote_address"].is_mapping() {
                        ("remote_address".to_string(), "192.0.2.1".to_string())
                    } else {
                        let g = &a["generic_key"];
                        (
                            g["descriptor_key"].as_str().unwrap().to_string(),
                            g["descriptor_value"].as_str().unwrap().to_string(),
                        )
                    }
                })
                .collect();
            let matched = cfg.rules.iter().any(|r| {
                r.descriptor.as_ref().is_some_and(|d| {
                    d.matches(
                        domain,
                        entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    )
                    .is_some()
                })
            });
            assert!(matched, "no rule answers {entries:?}");
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
}

#[test]
fn envoy_ext_authz_grpc_config_asks_tollgate_over_grpc_fail_closed() {
    let e = yaml(include_str!("../deploy/envoy/envoy-ext-authz-grpc.yaml"));
    assert_grpc_cluster(&e);
    let hcm =
        &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let authz = &hcm["http_filters"][0]["typed_config"];
    assert_eq!(authz["transport_api_version"].as_str(), Some("V3"));
    assert_eq!(authz["failure_mode_allow"].as_bool(), Some(false));
    // Raw header bytes: a byte >= 0x80 in X-Forwarded-For reaches the walk
    // (README "Who the client is") instead of Envoy dropping the value.
    assert_eq!(authz["encode_raw_headers"].as_bool(), Some(true));
    let grpc = &authz["grpc_service"];
    assert_eq!(
        grpc["envoy_grpc"]["cluster_name"].as_str(),
        Some("tollgate_grpc")
    );
    assert_eq!(grpc["timeout"].as_str(), Some("0.25s"));
    assert!(authz["http_service"].is_null(), "gRPC, not HTTP");
}

#[test]
fn envoy_copies_no_original_request_header_from_the_client() {
    // Envoy sends the method and path itself; a client's X-Forwarded-Uri or
    // X-Original-URI must never be among the headers it copies to tollgate.
    let e = yaml(include_str!("../deploy/envoy/envoy.yaml"));
    let hcm =
        &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let patterns = &hcm["http_filters"][0]["typed_config"]["http_service"]["authorization_request"]
        ["allowed_headers"]["patterns"];
    for p in patterns.as_sequence().unwrap() {
        for (_, v) in p.as_mapping().unwrap() {
            let v = v.as_str().unwrap().to_ascii_lowercase();
            for forged in [
                "x-forwarded-uri",
                "x-forwarded-method",
                "x-original-uri",
                "x-original-method",
                "x-forwarded-host",
            ] {
                assert!(
                    !forged.starts_with(&v),
                    "envoy copies {forged} from the client ({v})"
                );
            }
        }
    }
}
