//! Pod volumes from protobuf: every `VolumeSource` of core/v1 (Pod Security's restricted level
//! judges which source a volume uses, baseline judges `hostPath`), persistent volume claim
//! specs (ephemeral volumes, StatefulSet claim templates) and the projections.

use k8s_pb::api::core::v1 as core;
use serde_json::Value;

use super::conv::{
    done, fields, inline_name, label_selector, list, msg, object_meta, quantity, quantity_map,
    scalar, str_map, string, strings, value, R,
};
use super::pod::local_ref;
use super::podmore::{field_ref, resource_field_ref};

/// `Volume` inlines its `VolumeSource` in JSON.
pub fn volume(mut o: core::Volume) -> R<Value> {
    let mut m = fields!(o; "name" => name: string);
    if let Some(mut s) = o.volume_source.take() {
        m.extend(fields!(s;
            "hostPath" => host_path: msg(host_path), "emptyDir" => empty_dir: msg(empty_dir),
            "gcePersistentDisk" => gce_persistent_disk: msg(gce_pd),
            "awsElasticBlockStore" => aws_elastic_block_store: msg(aws_ebs),
            "gitRepo" => git_repo: msg(git_repo),
            "secret" => secret: msg(secret_volume), "nfs" => nfs: msg(nfs),
            "iscsi" => iscsi: msg(iscsi), "glusterfs" => glusterfs: msg(glusterfs),
            "persistentVolumeClaim" => persistent_volume_claim: msg(pvc_volume),
            "rbd" => rbd: msg(rbd), "flexVolume" => flex_volume: msg(flex),
            "cinder" => cinder: msg(cinder), "cephfs" => cephfs: msg(cephfs),
            "flocker" => flocker: msg(flocker), "downwardAPI" => downward_api: msg(downward_api),
            "fc" => fc: msg(fc), "azureFile" => azure_file: msg(azure_file),
            "configMap" => config_map: msg(cm_volume),
            "vsphereVolume" => vsphere_volume: msg(vsphere),
            "quobyte" => quobyte: msg(quobyte), "azureDisk" => azure_disk: msg(azure_disk),
            "photonPersistentDisk" => photon_persistent_disk: msg(photon),
            "projected" => projected: msg(projected),
            "portworxVolume" => portworx_volume: msg(portworx),
            "scaleIO" => scale_io: msg(scale_io), "storageos" => storageos: msg(storageos),
            "csi" => csi: msg(csi), "ephemeral" => ephemeral: msg(ephemeral),
            "image" => image: msg(image),
        ));
        if s != core::VolumeSource::default() {
            return done(s, "VolumeSource", m);
        }
    }
    done(o, "Volume", m)
}

fn host_path(mut o: core::HostPathVolumeSource) -> R<Value> {
    let m = fields!(o; "path" => path: string, "type" => r#type: scalar);
    done(o, "HostPathVolumeSource", m)
}

fn empty_dir(mut o: core::EmptyDirVolumeSource) -> R<Value> {
    let m = fields!(o; "medium" => medium: string, "sizeLimit" => size_limit: quantity);
    done(o, "EmptyDirVolumeSource", m)
}

pub fn key_to_path(mut o: core::KeyToPath) -> R<Value> {
    let m = fields!(o; "key" => key: string, "path" => path: string, "mode" => mode: scalar);
    done(o, "KeyToPath", m)
}

fn secret_volume(mut o: core::SecretVolumeSource) -> R<Value> {
    let m = fields!(o;
        "secretName" => secret_name: string, "items" => items: list(key_to_path),
        "defaultMode" => default_mode: scalar, "optional" => optional: scalar,
    );
    done(o, "SecretVolumeSource", m)
}

fn cm_volume(mut o: core::ConfigMapVolumeSource) -> R<Value> {
    let m = fields!(o;
        "name" => local_object_reference: inline_name, "items" => items: list(key_to_path),
        "defaultMode" => default_mode: scalar, "optional" => optional: scalar,
    );
    done(o, "ConfigMapVolumeSource", m)
}

fn pvc_volume(mut o: core::PersistentVolumeClaimVolumeSource) -> R<Value> {
    let m = fields!(o; "claimName" => claim_name: string, "readOnly" => read_only: value);
    done(o, "PersistentVolumeClaimVolumeSource", m)
}

fn downward_api(mut o: core::DownwardAPIVolumeSource) -> R<Value> {
    let m = fields!(o;
        "items" => items: list(downward_file), "defaultMode" => default_mode: scalar,
    );
    done(o, "DownwardAPIVolumeSource", m)
}

fn downward_file(mut o: core::DownwardAPIVolumeFile) -> R<Value> {
    let m = fields!(o;
        "path" => path: string, "fieldRef" => field_ref: msg(field_ref),
        "resourceFieldRef" => resource_field_ref: msg(resource_field_ref),
        "mode" => mode: scalar,
    );
    done(o, "DownwardAPIVolumeFile", m)
}

fn projected(mut o: core::ProjectedVolumeSource) -> R<Value> {
    let m = fields!(o;
        "sources" => sources: list(projection), "defaultMode" => default_mode: scalar,
    );
    done(o, "ProjectedVolumeSource", m)
}

fn projection(mut o: core::VolumeProjection) -> R<Value> {
    let m = fields!(o;
        "secret" => secret: msg(secret_projection),
        "downwardAPI" => downward_api: msg(downward_projection),
        "configMap" => config_map: msg(cm_projection),
        "serviceAccountToken" => service_account_token: msg(sa_token),
        "clusterTrustBundle" => cluster_trust_bundle: msg(trust_bundle),
        "podCertificate" => pod_certificate: msg(pod_certificate),
    );
    done(o, "VolumeProjection", m)
}

fn secret_projection(mut o: core::SecretProjection) -> R<Value> {
    let m = fields!(o;
        "name" => local_object_reference: inline_name, "items" => items: list(key_to_path),
        "optional" => optional: scalar,
    );
    done(o, "SecretProjection", m)
}

fn cm_projection(mut o: core::ConfigMapProjection) -> R<Value> {
    let m = fields!(o;
        "name" => local_object_reference: inline_name, "items" => items: list(key_to_path),
        "optional" => optional: scalar,
    );
    done(o, "ConfigMapProjection", m)
}

fn downward_projection(mut o: core::DownwardAPIProjection) -> R<Value> {
    let m = fields!(o; "items" => items: list(downward_file));
    done(o, "DownwardAPIProjection", m)
}

fn sa_token(mut o: core::ServiceAccountTokenProjection) -> R<Value> {
    let m = fields!(o;
        "audience" => audience: string, "expirationSeconds" => expiration_seconds: scalar,
        "path" => path: string,
    );
    done(o, "ServiceAccountTokenProjection", m)
}

fn trust_bundle(mut o: core::ClusterTrustBundleProjection) -> R<Value> {
    let m = fields!(o;
        "name" => name: scalar, "signerName" => signer_name: scalar,
        "labelSelector" => label_selector: msg(label_selector), "optional" => optional: scalar,
        "path" => path: string,
    );
    done(o, "ClusterTrustBundleProjection", m)
}

fn pod_certificate(mut o: core::PodCertificateProjection) -> R<Value> {
    let m = fields!(o;
        "signerName" => signer_name: string, "keyType" => key_type: string,
        "maxExpirationSeconds" => max_expiration_seconds: scalar,
        "credentialBundlePath" => credential_bundle_path: string,
        "keyPath" => key_path: string,
        "certificateChainPath" => certificate_chain_path: string,
        "userAnnotations" => user_annotations: str_map,
    );
    done(o, "PodCertificateProjection", m)
}

fn csi(mut o: core::CSIVolumeSource) -> R<Value> {
    let m = fields!(o;
        "driver" => driver: string, "readOnly" => read_only: scalar, "fsType" => fs_type: scalar,
        "volumeAttributes" => volume_attributes: str_map,
        "nodePublishSecretRef" => node_publish_secret_ref: msg(local_ref),
    );
    done(o, "CSIVolumeSource", m)
}

fn ephemeral(mut o: core::EphemeralVolumeSource) -> R<Value> {
    let m = fields!(o; "volumeClaimTemplate" => volume_claim_template: msg(pvc_template));
    done(o, "EphemeralVolumeSource", m)
}

fn pvc_template(mut o: core::PersistentVolumeClaimTemplate) -> R<Value> {
    let m = fields!(o; "metadata" => metadata: msg(object_meta), "spec" => spec: msg(pvc_spec));
    done(o, "PersistentVolumeClaimTemplate", m)
}

pub fn pvc_spec(mut o: core::PersistentVolumeClaimSpec) -> R<Value> {
    let m = fields!(o;
        "accessModes" => access_modes: strings, "selector" => selector: msg(label_selector),
        "resources" => resources: msg(volume_resources), "volumeName" => volume_name: string,
        "storageClassName" => storage_class_name: scalar, "volumeMode" => volume_mode: scalar,
        "dataSource" => data_source: msg(typed_local_ref),
        "dataSourceRef" => data_source_ref: msg(typed_ref),
        "volumeAttributesClassName" => volume_attributes_class_name: scalar,
    );
    done(o, "PersistentVolumeClaimSpec", m)
}

fn volume_resources(mut o: core::VolumeResourceRequirements) -> R<Value> {
    let m = fields!(o; "limits" => limits: quantity_map, "requests" => requests: quantity_map);
    done(o, "VolumeResourceRequirements", m)
}

fn typed_local_ref(mut o: core::TypedLocalObjectReference) -> R<Value> {
    let m = fields!(o;
        "apiGroup" => api_group: scalar, "kind" => kind: string, "name" => name: string,
    );
    done(o, "TypedLocalObjectReference", m)
}

fn typed_ref(mut o: core::TypedObjectReference) -> R<Value> {
    let m = fields!(o;
        "apiGroup" => api_group: scalar, "kind" => kind: string, "name" => name: string,
        "namespace" => namespace: scalar,
    );
    done(o, "TypedObjectReference", m)
}

fn image(mut o: core::ImageVolumeSource) -> R<Value> {
    let m = fields!(o; "reference" => reference: string, "pullPolicy" => pull_policy: string);
    done(o, "ImageVolumeSource", m)
}

// The in-tree (mostly deprecated) sources: converted field for field so that a pod naming one
// is judged (restricted refuses them all) rather than refused as unconvertible.

fn gce_pd(mut o: core::GcePersistentDiskVolumeSource) -> R<Value> {
    let m = fields!(o;
        "pdName" => pd_name: string, "fsType" => fs_type: string,
        "partition" => partition: value, "readOnly" => read_only: value,
    );
    done(o, "GCEPersistentDiskVolumeSource", m)
}

fn aws_ebs(mut o: core::AwsElasticBlockStoreVolumeSource) -> R<Value> {
    let m = fields!(o;
        "volumeID" => volume_id: string, "fsType" => fs_type: string,
        "partition" => partition: value, "readOnly" => read_only: value,
    );
    done(o, "AWSElasticBlockStoreVolumeSource", m)
}

fn git_repo(mut o: core::GitRepoVolumeSource) -> R<Value> {
    let m = fields!(o;
        "repository" => repository: string, "revision" => revision: string,
        "directory" => directory: string,
    );
    done(o, "GitRepoVolumeSource", m)
}

fn nfs(mut o: core::NfsVolumeSource) -> R<Value> {
    let m = fields!(o;
        "server" => server: string, "path" => path: string, "readOnly" => read_only: value,
    );
    done(o, "NFSVolumeSource", m)
}

fn iscsi(mut o: core::IscsiVolumeSource) -> R<Value> {
    let m = fields!(o;
        "targetPortal" => target_portal: string, "iqn" => iqn: string, "lun" => lun: value,
        "iscsiInterface" => iscsi_interface: string, "fsType" => fs_type: string,
        "readOnly" => read_only: value, "portals" => portals: strings,
        "chapAuthDiscovery" => chap_auth_discovery: value,
        "chapAuthSession" => chap_auth_session: value,
        "secretRef" => secret_ref: msg(local_ref), "initiatorName" => initiator_name: scalar,
    );
    done(o, "ISCSIVolumeSource", m)
}

fn glusterfs(mut o: core::GlusterfsVolumeSource) -> R<Value> {
    let m = fields!(o;
        "endpoints" => endpoints: string, "path" => path: string, "readOnly" => read_only: value,
    );
    done(o, "GlusterfsVolumeSource", m)
}

fn rbd(mut o: core::RbdVolumeSource) -> R<Value> {
    let m = fields!(o;
        "monitors" => monitors: strings, "image" => image: string, "fsType" => fs_type: string,
        "pool" => pool: string, "user" => user: string, "keyring" => keyring: string,
        "secretRef" => secret_ref: msg(local_ref), "readOnly" => read_only: value,
    );
    done(o, "RBDVolumeSource", m)
}

fn flex(mut o: core::FlexVolumeSource) -> R<Value> {
    let m = fields!(o;
        "driver" => driver: string, "fsType" => fs_type: string,
        "secretRef" => secret_ref: msg(local_ref), "readOnly" => read_only: value,
        "options" => options: str_map,
    );
    done(o, "FlexVolumeSource", m)
}

fn cinder(mut o: core::CinderVolumeSource) -> R<Value> {
    let m = fields!(o;
        "volumeID" => volume_id: string, "fsType" => fs_type: string,
        "readOnly" => read_only: value, "secretRef" => secret_ref: msg(local_ref),
    );
    done(o, "CinderVolumeSource", m)
}

fn cephfs(mut o: core::CephFsVolumeSource) -> R<Value> {
    let m = fields!(o;
        "monitors" => monitors: strings, "path" => path: string, "user" => user: string,
        "secretFile" => secret_file: string, "secretRef" => secret_ref: msg(local_ref),
        "readOnly" => read_only: value,
    );
    done(o, "CephFSVolumeSource", m)
}

fn flocker(mut o: core::FlockerVolumeSource) -> R<Value> {
    let m = fields!(o;
        "datasetName" => dataset_name: string, "datasetUUID" => dataset_uuid: string,
    );
    done(o, "FlockerVolumeSource", m)
}

fn fc(mut o: core::FcVolumeSource) -> R<Value> {
    let m = fields!(o;
        "targetWWNs" => target_ww_ns: strings, "lun" => lun: scalar, "fsType" => fs_type: string,
        "readOnly" => read_only: value, "wwids" => wwids: strings,
    );
    done(o, "FCVolumeSource", m)
}

fn azure_file(mut o: core::AzureFileVolumeSource) -> R<Value> {
    let m = fields!(o;
        "secretName" => secret_name: string, "shareName" => share_name: string,
        "readOnly" => read_only: value,
    );
    done(o, "AzureFileVolumeSource", m)
}

fn vsphere(mut o: core::VsphereVirtualDiskVolumeSource) -> R<Value> {
    let m = fields!(o;
        "volumePath" => volume_path: string, "fsType" => fs_type: string,
        "storagePolicyName" => storage_policy_name: string,
        "storagePolicyID" => storage_policy_id: string,
    );
    done(o, "VsphereVirtualDiskVolumeSource", m)
}

fn quobyte(mut o: core::QuobyteVolumeSource) -> R<Value> {
    let m = fields!(o;
        "registry" => registry: string, "volume" => volume: string,
        "readOnly" => read_only: value, "user" => user: string, "group" => group: string,
        "tenant" => tenant: string,
    );
    done(o, "QuobyteVolumeSource", m)
}

fn azure_disk(mut o: core::AzureDiskVolumeSource) -> R<Value> {
    let m = fields!(o;
        "diskName" => disk_name: string, "diskURI" => disk_uri: string,
        "cachingMode" => caching_mode: scalar, "fsType" => fs_type: scalar,
        "readOnly" => read_only: scalar, "kind" => kind: scalar,
    );
    done(o, "AzureDiskVolumeSource", m)
}

fn photon(mut o: core::PhotonPersistentDiskVolumeSource) -> R<Value> {
    let m = fields!(o; "pdID" => pd_id: string, "fsType" => fs_type: string);
    done(o, "PhotonPersistentDiskVolumeSource", m)
}

fn portworx(mut o: core::PortworxVolumeSource) -> R<Value> {
    let m = fields!(o;
        "volumeID" => volume_id: string, "fsType" => fs_type: string,
        "readOnly" => read_only: value,
    );
    done(o, "PortworxVolumeSource", m)
}

fn scale_io(mut o: core::ScaleIoVolumeSource) -> R<Value> {
    let m = fields!(o;
        "gateway" => gateway: string, "system" => system: string,
        "secretRef" => secret_ref: msg(local_ref), "sslEnabled" => ssl_enabled: value,
        "protectionDomain" => protection_domain: string, "storagePool" => storage_pool: string,
        "storageMode" => storage_mode: string, "volumeName" => volume_name: string,
        "fsType" => fs_type: string, "readOnly" => read_only: value,
    );
    done(o, "ScaleIOVolumeSource", m)
}

fn storageos(mut o: core::StorageOsVolumeSource) -> R<Value> {
    let m = fields!(o;
        "volumeName" => volume_name: string, "volumeNamespace" => volume_namespace: string,
        "fsType" => fs_type: string, "readOnly" => read_only: value,
        "secretRef" => secret_ref: msg(local_ref),
    );
    done(o, "StorageOSVolumeSource", m)
}
