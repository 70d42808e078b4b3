use imgate_crds::{IMPolicy, Tenant};

use super::*;
use crate::check::check_object;
use crate::examples::{policies, tenant};
use crate::names;
use crate::policy::PolicySet;

fn broker() -> (Tenant, PolicySet) {
    let tenant = tenant("broker-dealer/tenant.yaml");
    let policies = policies(&[
        "broker-dealer/policy-firm-wide.yaml",
        "broker-dealer/policy-trading-desk.yaml",
    ]);
    let set = PolicySet::build("meridian-capital", &policies).expect("compiles");
    (tenant, set)
}

fn find<'a>(objects: &'a [Object], describe: &str) -> &'a Object {
    objects
        .iter()
        .find(|o| o.describe() == describe)
        .unwrap_or_else(|| panic!("{describe} is not among the objects"))
}

#[test]
fn every_object_is_its_kubernetes_type_labelled_and_owned_by_its_tenant() {
    let (tenant, set) = broker();
    let objects = desired(&tenant, Some(&set), &Settings::default());
    assert_eq!(
        objects.len(),
        14,
        "{:?}",
        objects.iter().map(Object::describe).collect::<Vec<_>>()
    );
    for object in &objects {
        let problems = check_object(&object.to_json());
        assert!(problems.is_empty(), "{}: {problems:?}", object.describe());
        let meta = object.meta();
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get(names::TENANT_LABEL))
                .map(String::as_str),
            Some("meridian-capital"),
            "{}",
            object.describe()
        );
        if let Object::Namespace(_) = object {
            assert_eq!(
                meta.owner_references, None,
                "the namespace outlives its Tenant, with the write-ahead-log volumes in it"
            );
            continue;
        }
        let owners = meta.owner_references.as_ref().expect("owner");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Tenant");
        assert_eq!(owners[0].name, "meridian-capital");
        assert_eq!(owners[0].uid, "0e6f5c1a-0000-4000-8000-000000000001");
        assert_eq!(owners[0].controller, Some(true));
        let namespaced = !matches!(object, Object::Namespace(_));
        assert_eq!(
            meta.namespace.as_deref(),
            namespaced.then_some("imgate-meridian-capital"),
            "{}",
            object.describe()
        );
    }
    // The namespace comes first: everything else lives in it.
    assert_eq!(objects[0].describe(), "Namespace/imgate-meridian-capital");
}

#[test]
fn the_dataplanes_run_locked_down_and_drain_before_they_are_killed() {
    let (tenant, set) = broker();
    let settings = Settings::default();
    let objects = desired(&tenant, Some(&set), &settings);
    let Object::StatefulSet(set) = find(&objects, "StatefulSet/dataplane") else {
        panic!("not a StatefulSet")
    };
    let spec = set.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, None, "replicas belong to the autoscaler");
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(i64::from(settings.drain_seconds + settings.flush_seconds))
    );
    let security = pod.security_context.as_ref().expect("pod security");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let container = &pod.containers[0];
    let locked = container
        .security_context
        .as_ref()
        .expect("container security");
    assert_eq!(locked.read_only_root_filesystem, Some(true));
    assert_eq!(locked.allow_privilege_escalation, Some(false));
    assert_eq!(
        locked.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
    let keys: Vec<_> = pod
        .topology_spread_constraints
        .iter()
        .flatten()
        .map(|c| c.topology_key.as_str())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    // The tenant's own interception CA is mounted, and none is generated.
    let volumes = pod.volumes.as_ref().expect("volumes");
    let interception = volumes
        .iter()
        .find(|v| v.name == "interception-ca")
        .expect("volume");
    assert_eq!(
        interception
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("meridian-interception-ca")
    );
    assert!(
        objects
            .iter()
            .all(|o| o.describe() != "Secret/interception-ca")
    );
}

#[test]
fn the_dataplane_is_told_the_tenants_archive_and_tunnel() {
    let (tenant, _) = broker();
    let settings = Settings {
        tunnel_domain: Some("tunnel.msp.example".into()),
        ..Settings::default()
    };
    let args = workload::dataplane_args(&tenant, &settings).join(" ");
    for expected in [
        "--tenant meridian-capital",
        "--s3-bucket meridian-im-archive",
        "--s3-region us-east-1",
        "--retention-days 2192",
        "--retention-mode compliance",
        "--forward-after synced",
        "--tunnel 0.0.0.0:4433",
        "--tunnel-name tunnel.imgate-meridian-capital.svc",
        "--tunnel-name meridian-capital.tunnel.msp.example",
        "--workers 1",
        "--writer $(POD_NAME)",
    ] {
        assert!(args.contains(expected), "{expected:?} missing from {args}");
    }
    assert!(!args.contains("--s3-endpoint"), "AWS needs no endpoint");
    assert!(
        !args.contains("--allow-destination"),
        "no network beyond the public internet unless the tenant names one"
    );
}

#[test]
fn the_networks_a_tenant_allows_its_sessions_reach_the_dataplane() {
    let (mut tenant, _) = broker();
    tenant.spec.destinations = Some(imgate_crds::tenant::DestinationsSpec {
        allow_networks: vec![
            "10.20.0.0/16".into(),
            "fd00:20::/64".into(),
            "10.30.0.7".into(),
            "10.20.0.0/1".into(),
        ],
        allow_domains: vec!["chat.example".into(), "10.0.0.1".into()],
        deny: vec![
            "games.example".into(),
            "8.8.8.0/24".into(),
            "bad_name".into(),
        ],
        ports: vec!["5222-5223".into(), "6697".into(), "0".into()],
    });
    let args = workload::dataplane_args(&tenant, &Settings::default()).join(" ");
    assert!(
        args.contains(
            "--allow-destination 10.20.0.0/16 --allow-destination fd00:20::/64 --allow-destination 10.30.0.7"
        ),
        "{args}"
    );
    assert!(
        !args.split(' ').any(|arg| arg == "10.20.0.0/1"),
        "an entry the dataplane would refuse is left out: {args}"
    );
    assert!(
        args.contains(
            "--allow-destination chat.example --deny-destination games.example --deny-destination 8.8.8.0/24 --allow-port 5222-5223 --allow-port 6697"
        ) && !args.contains("bad_name")
            && !args.split(' ').any(|arg| arg == "10.0.0.1")
            && !args.split(' ').any(|arg| arg == "0"),
        "the tenant's deny rules and ports reach the dataplane: {args}"
    );
    let mut closed = tenant.clone();
    if let Some(destinations) = closed.spec.destinations.as_mut() {
        destinations.ports = vec!["0".into()];
    }
    let args = workload::dataplane_args(&closed, &Settings::default()).join(" ");
    assert!(
        args.contains("--deny-destination 0.0.0.0/0 --deny-destination ::/0")
            && !args.contains("--allow-port"),
        "a port list none of whose entries can be read denies every destination: {args}"
    );
    let mut closed = tenant.clone();
    if let Some(destinations) = closed.spec.destinations.as_mut() {
        destinations.allow_domains = vec!["10.0.0.1".into()];
    }
    let args = workload::dataplane_args(&closed, &Settings::default()).join(" ");
    assert!(
        args.contains("--deny-destination 0.0.0.0/0 --deny-destination ::/0"),
        "an allowed-domain list none of whose entries is a domain denies every destination: {args}"
    );
    let policy = network::network_policy(&tenant, &Settings::default());
    let egress = serde_json::to_value(&policy.spec.as_ref().expect("a spec").egress).expect("JSON");
    let blocks: Vec<&str> = egress
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["to"].as_array().into_iter().flatten())
        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str())
        .collect();
    for cidr in ["10.20.0.0/16", "fd00:20::/64", "10.30.0.7/32"] {
        assert!(blocks.contains(&cidr), "{cidr} not let out: {blocks:?}");
    }
    let problems = crate::validation::problems_of(&policy);
    assert!(problems.is_empty(), "{problems:?}");
}

/// The pod template of the tenant's StatefulSet.
fn dataplane_pod(objects: &[Object]) -> &k8s_openapi::api::core::v1::PodSpec {
    let Object::StatefulSet(set) = find(objects, "StatefulSet/dataplane") else {
        panic!("not a StatefulSet")
    };
    set.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod")
}

#[test]
fn archive_failure_encryption_identity_and_trust_reach_the_dataplane() {
    let (mut broker, set) = broker();
    let objects = desired(&broker, Some(&set), &Settings::default());
    let pod = dataplane_pod(&objects);
    let container = &pod.containers[0];
    let args = container.args.as_ref().expect("args").join(" ");
    for expected in [
        "--on-archive-failure block",
        "--s3-encryption kms --s3-kms-key arn:aws:kms:us-east-1:123456789012:key/1f9c2d3e-0000-4000-8000-000000000001",
        "--identity /etc/imgate/policy/identity.yaml",
    ] {
        assert!(args.contains(expected), "{expected:?} missing from {args}");
    }
    assert!(!args.contains("--extra-roots"), "{args}");
    // The identity travels in the policy ConfigMap, as the Tenant states it.
    let Object::ConfigMap(map) = find(&objects, "ConfigMap/policy") else {
        panic!("not a ConfigMap")
    };
    let identity: imgate_crds::tenant::IdentitySpec =
        serde_saphyr::from_str(&map.data.as_ref().expect("data")[crate::policy::IDENTITY_FILE])
            .expect("an IdentitySpec");
    assert_eq!(Some(&identity), broker.spec.identity.as_ref());
    // The LDAP bind comes from the tenant's Secret, under the names `imgate up` reads.
    let bind: Vec<(String, String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let key = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), key.name.clone(), key.key.clone()))
        })
        .collect();
    assert_eq!(
        bind,
        [
            (
                "IMGATE_LDAP_BIND_DN".to_owned(),
                "meridian-ldap-bind".to_owned(),
                "bindDN".to_owned()
            ),
            (
                "IMGATE_LDAP_PASSWORD".to_owned(),
                "meridian-ldap-bind".to_owned(),
                "password".to_owned()
            ),
        ]
    );

    broker.spec.tls = Some(imgate_crds::tenant::TlsSpec {
        extra_roots_secret_ref: Some(imgate_crds::tenant::SecretRef {
            name: "meridian-roots".into(),
        }),
        ..imgate_crds::tenant::TlsSpec::default()
    });
    let objects = desired(&broker, Some(&set), &Settings::default());
    let pod = dataplane_pod(&objects);
    let args = pod.containers[0].args.as_ref().expect("args").join(" ");
    assert!(
        args.contains("--extra-roots /etc/imgate/extra-roots/ca.crt"),
        "{args}"
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "extra-roots")
        .and_then(|v| v.secret.as_ref())
        .expect("the roots' Secret is mounted");
    assert_eq!(volume.secret_name.as_deref(), Some("meridian-roots"));
    assert!(
        pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "extra-roots" && m.mount_path == "/etc/imgate/extra-roots")
    );

    let dental = tenant("small-firm/tenant.yaml");
    let objects = desired(&dental, None, &Settings::default());
    let args = dataplane_pod(&objects).containers[0]
        .args
        .as_ref()
        .expect("args")
        .join(" ");
    assert!(args.contains("--on-archive-failure pass"), "{args}");
    assert!(args.contains("--s3-encryption s3"), "{args}");
    assert!(!args.contains("--s3-kms-key"), "{args}");
    assert!(
        dataplane_pod(&objects).containers[0]
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("IMGATE_LDAP")),
        "no directory, no bind"
    );
}

#[test]
fn a_role_arn_annotates_the_service_account_and_static_keys_come_from_their_secret() {
    let (broker, _) = broker();
    let objects = desired(&broker, None, &Settings::default());
    let Object::ServiceAccount(account) = find(&objects, "ServiceAccount/imgate-dataplane") else {
        panic!("not a ServiceAccount")
    };
    assert_eq!(
        account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(access::ROLE_ARN))
            .map(String::as_str),
        Some("arn:aws:iam::123456789012:role/imgate-meridian-capital-archive")
    );
    assert_eq!(account.automount_service_account_token, Some(false));
    assert!(
        objects.iter().all(|o| !matches!(o, Object::ConfigMap(_))),
        "no policy ConfigMap before a policy set compiles"
    );

    let dental = tenant("small-firm/tenant.yaml");
    let objects = desired(&dental, None, &Settings::default());
    let container = &dataplane_pod(&objects).containers[0];
    let from = container.env_from.as_ref().expect("credentials");
    assert_eq!(
        from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
        Some("harbor-dental-s3")
    );
    assert!(
        find(&objects, "ServiceAccount/imgate-dataplane")
            .meta()
            .annotations
            .is_none()
    );
    assert!(
        container
            .args
            .as_ref()
            .expect("args")
            .join(" ")
            .contains("--s3-endpoint https://s3.eu-central-1.wasabisys.com")
    );
    // No CA of its own: the operator generates one.
    let secret = find(&objects, "Secret/interception-ca")
        .generated_secret()
        .expect("a generated Secret");
    assert!(
        secret.data.is_none() && secret.string_data.is_none(),
        "generated keys are not rendered"
    );
}

#[test]
fn scaling_disruption_and_network_follow_the_tenant_and_settings() {
    let (tenant, set) = broker();
    let objects = desired(&tenant, Some(&set), &Settings::default());
    let Object::HorizontalPodAutoscaler(hpa) = find(&objects, "HorizontalPodAutoscaler/dataplane")
    else {
        panic!("not an HPA")
    };
    let spec = hpa.spec.as_ref().expect("spec");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 20));
    assert_eq!(spec.scale_target_ref.kind, "StatefulSet");
    let target = spec
        .metrics
        .as_ref()
        .and_then(|m| m[0].resource.as_ref())
        .expect("cpu");
    assert_eq!(target.target.average_utilization, Some(70));

    let Object::NetworkPolicy(policy) = find(&objects, "NetworkPolicy/dataplane") else {
        panic!("not a NetworkPolicy")
    };
    let spec = policy.spec.as_ref().expect("spec");
    let ingress = spec.ingress.as_ref().expect("ingress");
    let port = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        let p = &rule.ports.as_ref().expect("ports")[0];
        (p.protocol.clone().unwrap_or_default(), p.port.clone())
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(
        port(&ingress[0]),
        ("UDP".into(), Some(IntOrString::Int(4433)))
    );
    assert!(ingress[0].from.is_none(), "connectors come from anywhere");
    assert_eq!(
        port(&ingress[1]),
        ("TCP".into(), Some(IntOrString::Int(9464)))
    );
    let egress = spec.egress.as_ref().expect("egress");
    assert_eq!(
        egress.len(),
        2,
        "DNS and the internet: no API server range given, no collector"
    );
    assert!(
        dataplane_pod(&objects).containers[0]
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("OTEL_")),
        "no traces without an endpoint"
    );
    let blocks: Vec<_> = egress[1]
        .to
        .iter()
        .flatten()
        .filter_map(|p| p.ip_block.as_ref())
        .collect();
    assert!(
        blocks[0]
            .except
            .iter()
            .flatten()
            .any(|c| c == "169.254.0.0/16"),
        "instance metadata is out of reach"
    );

    let Object::Service(tunnel) = find(&objects, "Service/tunnel") else {
        panic!("not a Service")
    };
    let spec = tunnel.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        spec.external_traffic_policy.as_deref(),
        Some("Local"),
        "connector addresses are kept"
    );
}

#[test]
fn the_msps_node_selector_and_load_balancer_annotations_are_passed_on() {
    let (tenant, set) = broker();
    let plain = desired(&tenant, Some(&set), &Settings::default());
    let Object::Service(tunnel) = find(&plain, "Service/tunnel") else {
        panic!("not a Service")
    };
    assert!(tunnel.metadata.annotations.is_none());
    let settings = Settings {
        node_selector: [("imgate.io/role".to_owned(), "dataplane".to_owned())].into(),
        tunnel_service_annotations: [(
            "service.beta.kubernetes.io/aws-load-balancer-type".to_owned(),
            "external".to_owned(),
        )]
        .into(),
        ..Settings::default()
    };
    let objects = desired(&tenant, Some(&set), &settings);
    assert_eq!(
        dataplane_pod(&objects).node_selector.as_ref(),
        Some(&settings.node_selector)
    );
    let Object::Service(tunnel) = find(&objects, "Service/tunnel") else {
        panic!("not a Service")
    };
    assert_eq!(
        tunnel.metadata.annotations.as_ref(),
        Some(&settings.tunnel_service_annotations)
    );
    let Object::Service(metrics) = find(&objects, "Service/metrics") else {
        panic!("not a Service")
    };
    assert!(
        metrics.metadata.annotations.is_none(),
        "only the tunnel gets a load balancer"
    );
}

#[test]
fn the_policy_config_map_carries_the_compiled_set_and_its_revision() {
    let (tenant, set) = broker();
    let objects = desired(&tenant, Some(&set), &Settings::default());
    let Object::ConfigMap(map) = find(&objects, "ConfigMap/policy") else {
        panic!("not a ConfigMap")
    };
    assert_eq!(
        map.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(access::POLICY_REVISION)),
        Some(&set.revision)
    );
    let yaml = &map.data.as_ref().expect("data")[crate::policy::POLICY_FILE];
    let delivered: Vec<IMPolicy> = serde_saphyr::from_multiple(yaml).expect("IMPolicy documents");
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        PolicySet::build("meridian-capital", &delivered)
            .expect("compiles")
            .revision,
        set.revision,
        "what the dataplanes receive rebuilds the same revision"
    );
}

#[test]
fn the_dataplanes_may_redeem_enrollment_tokens_and_learn_of_revoked_connectors() {
    let (mut tenant, set) = broker();
    tenant.spec.tunnel.enroll_connector = "canary-wharf".into();
    tenant.spec.tunnel.revoked_connectors = vec!["old-laptop".into(), "site-b".into()];
    let settings = Settings {
        api_server_cidrs: vec!["10.0.0.0/28".into()],
        ..Settings::default()
    };
    let objects = desired(&tenant, Some(&set), &settings);

    let Object::RoleBinding(binding) = find(&objects, "RoleBinding/dataplane") else {
        panic!("not a RoleBinding")
    };
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("ClusterRole", names::DATAPLANE_ROLE)
    );
    let subjects = binding.subjects.as_ref().expect("subjects");
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        (
            "ServiceAccount",
            names::SERVICE_ACCOUNT,
            Some("imgate-meridian-capital")
        )
    );

    let enrollment = find(&objects, "Secret/connector-enrollment");
    let secret = enrollment
        .generated_secret()
        .expect("generated by the operator");
    assert!(
        secret.data.is_none(),
        "the token is minted when it is created"
    );
    assert_eq!(
        secret.metadata.annotations.as_ref().expect("annotations")[crate::enrollment::CONNECTOR],
        "canary-wharf"
    );

    let Object::ConfigMap(policy) = find(&objects, "ConfigMap/policy") else {
        panic!("not a ConfigMap")
    };
    assert_eq!(
        policy.data.as_ref().expect("data")[crate::policy::REVOKED_FILE],
        "old-laptop\nsite-b\n"
    );

    let Object::StatefulSet(dataplanes) = find(&objects, "StatefulSet/dataplane") else {
        panic!("not a StatefulSet")
    };
    let pod = dataplanes
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod");
    assert_eq!(pod.automount_service_account_token, Some(true));
    let args = pod.containers[0].args.clone().expect("args").join(" ");
    assert!(
        args.contains("--enrollment-secret connector-enrollment")
            && args.contains("--generations-secret connector-generations")
            && args.contains("--policy-config-map policy")
            && args.contains("--tunnel-revoked /etc/imgate/policy/revoked-connectors"),
        "{args}"
    );

    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let api_server = |objects: &[Object]| {
        let Object::NetworkPolicy(policy) = find(objects, "NetworkPolicy/dataplane") else {
            panic!("not a NetworkPolicy")
        };
        policy
            .spec
            .clone()
            .expect("spec")
            .egress
            .expect("egress")
            .into_iter()
            .find(|rule| {
                rule.ports
                    .iter()
                    .flatten()
                    .any(|p| p.port == Some(IntOrString::Int(6443)))
            })
    };
    let narrow = api_server(&objects).expect("a rule for the API server");
    let ports: Vec<_> = narrow
        .ports
        .iter()
        .flatten()
        .map(|p| p.port.clone())
        .collect();
    assert_eq!(
        ports,
        [Some(IntOrString::Int(443)), Some(IntOrString::Int(6443))]
    );
    let to = narrow.to.expect("only the API server's range");
    assert_eq!(
        to[0].ip_block.as_ref().expect("a block").cidr,
        "10.0.0.0/28"
    );
    let plain = desired(&tenant, Some(&set), &Settings::default());
    assert!(
        api_server(&plain).is_none(),
        "without the API server's range, its ports are open at no address"
    );
}

/// Every object every example tenant becomes, under the chart's defaults and under settings
/// that switch on every optional field, passes the API server's own validation (the rules
/// across fields that a type check cannot see); generated Secrets are checked as the
/// operator creates them, with their keys.
#[test]
fn every_desired_object_passes_the_api_servers_validation() {
    use crate::validation::problems_of;
    let examples = [
        ("small-firm/tenant.yaml", vec!["small-firm/policy.yaml"]),
        (
            "broker-dealer/tenant.yaml",
            vec![
                "broker-dealer/policy-firm-wide.yaml",
                "broker-dealer/policy-trading-desk.yaml",
            ],
        ),
        ("discovery/tenant.yaml", vec!["discovery/policy.yaml"]),
    ];
    let everything = Settings {
        tunnel_service_type: "NodePort".into(),
        storage_class: Some("gp3".into()),
        tunnel_domain: Some("tunnel.msp.example".into()),
        node_selector: [("imgate.io/pool".to_owned(), "dataplanes".to_owned())].into(),
        tunnel_service_annotations: [(
            "service.beta.kubernetes.io/aws-load-balancer-type".to_owned(),
            "external".to_owned(),
        )]
        .into(),
        api_server_cidrs: vec!["10.0.0.0/28".into(), "fd00::/64".into()],
        otlp_endpoint: Some("http://otel-collector.monitoring:4318".into()),
        ..Settings::default()
    };
    let mut checked = 0;
    for (tenant_file, policy_files) in examples {
        let tenant = tenant(tenant_file);
        let name = names::tenant_name(&tenant).to_owned();
        let set = PolicySet::build(&name, &policies(&policy_files)).expect("compiles");
        for settings in [Settings::default(), everything.clone()] {
            let mut ca_pin = None;
            for object in desired(&tenant, Some(&set), &settings) {
                let problems = match object.generated_secret() {
                    Some(secret) => {
                        let mut made = secret.clone();
                        crate::reconcile::apply::fill(&mut made, &name, ca_pin.as_deref())
                            .expect("keys");
                        if made.metadata.name.as_deref() == Some(names::TUNNEL_CA_SECRET) {
                            ca_pin = made
                                .metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(crate::enrollment::CA_PIN))
                                .cloned();
                        }
                        problems_of(&made)
                    }
                    None => check_object(&object.to_json()),
                };
                assert!(
                    problems.is_empty(),
                    "{name}: {} would be refused: {problems:#?}",
                    object.describe()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 70, "{checked} objects checked");
}

#[test]
fn alerts_reach_the_dataplane_with_their_secrets_and_a_change_rolls_the_pods() {
    let (mut broker, set) = broker();
    let plain = desired(&broker, Some(&set), &Settings::default());
    let plain_pod = dataplane_pod(&plain);
    assert!(
        !plain_pod.containers[0]
            .args
            .as_ref()
            .expect("args")
            .contains(&"--alerts".to_owned()),
        "no alerts, no options"
    );
    broker.spec.alerts = Some(
        serde_saphyr::from_str(
            "groupWindow: 5m\nreceivers:\n- name: hook\n  webhook: {url: 'https://hooks.example/imgate', secretRef: {name: hook-key}}\n- name: mail\n  email: {smtp: 'smtp.example:587', from: imgate@example.com, to: [compliance@example.com], credentialsSecretRef: {name: smtp}, caSecretRef: {name: hook-key}}\n",
        )
        .expect("alerts"),
    );
    let objects = desired(&broker, Some(&set), &Settings::default());
    for object in &objects {
        let problems = check_object(&object.to_json());
        assert!(problems.is_empty(), "{}: {problems:?}", object.describe());
    }
    let Object::ConfigMap(map) = find(&objects, "ConfigMap/policy") else {
        panic!("not a ConfigMap")
    };
    let delivered: imgate_crds::alerts::AlertsSpec =
        serde_saphyr::from_str(&map.data.as_ref().expect("data")[alerts::ALERTS_FILE])
            .expect("an AlertsSpec");
    assert_eq!(Some(&delivered), broker.spec.alerts.as_ref());
    let pod = dataplane_pod(&objects);
    let args = pod.containers[0].args.as_ref().expect("args").join(" ");
    assert!(
        args.contains(
            "--alerts /etc/imgate/policy/alerts.yaml --secrets /etc/imgate/alert-secrets"
        ),
        "{args}"
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "alert-secrets")
        .expect("the Secrets' volume");
    let projected: Vec<(String, Vec<String>)> = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| s.secret.as_ref())
        .map(|s| {
            let paths = s.items.iter().flatten().map(|i| i.path.clone()).collect();
            (s.name.clone(), paths)
        })
        .collect();
    assert_eq!(
        projected,
        [
            (
                "hook-key".to_owned(),
                vec!["hook-key/secret".to_owned(), "hook-key/ca.crt".to_owned()]
            ),
            (
                "smtp".to_owned(),
                vec!["smtp/username".to_owned(), "smtp/password".to_owned()]
            ),
        ],
        "each Secret once, with the keys used, where `imgate up --secrets` looks"
    );
    assert!(
        pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "alert-secrets" && m.mount_path == alerts::ALERT_SECRETS_DIR)
    );
    let revision = |objects: &[Object]| {
        let Object::StatefulSet(set) = find(objects, "StatefulSet/dataplane") else {
            panic!("not a StatefulSet")
        };
        set.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(alerts::ALERTS_REVISION))
            .cloned()
    };
    let before = revision(&objects).expect("annotated");
    if let Some(alerts) = broker.spec.alerts.as_mut() {
        alerts.group_window = "15m".into();
    }
    let after = revision(&desired(&broker, Some(&set), &Settings::default()));
    assert_ne!(Some(before), after, "a change rolls the pods");
    assert_eq!(revision(&plain), None);
}
