//! The kube-rs client through the proxy: create / get / list / watch / delete a ConfigMap.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Env;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_configmap_lifecycle() {
    let env = Env::start().await;
    let kc = Kubeconfig::read_from(&env.files.admin_kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");

    // Start a watch first so the create is seen as an event.
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "from-kube-rs", "labels": {"team": "a"}},
        "data": {"k": "v"}
    }))
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("from-kube-rs"));

    let added = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            if let WatchEvent::Added(o) = ev.unwrap() {
                return o;
            }
        }
        panic!("watch ended")
    })
    .await
    .unwrap();
    assert_eq!(added.metadata.name.as_deref(), Some("from-kube-rs"));

    let got = cms.get("from-kube-rs").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");

    let listed = cms
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    cms.delete("from-kube-rs", &DeleteParams::default())
        .await
        .unwrap();
    let err = cms.get("from-kube-rs").await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 404),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    env.stop().await;
}
