# The site's workloads on GKE Autopilot: the site service, the Dask scheduler and the Dask
# workers in their own namespace. Configuration files come from a ConfigMap, TLS material from a
# Kubernetes secret the custodian creates (tls_secret_name). NetworkPolicies deny all ingress
# except the site port from the orchestrator's CIDRs and Dask traffic inside the namespace.

locals {
  config_dir = "/etc/fedflow"
  tls_dir    = "/etc/fedflow/tls"
  state_dir  = "/var/lib/fedflow"
  # The scheduler's in-cluster DNS name.
  scheduler_host = "${kubernetes_service_v1.scheduler.metadata[0].name}.${local.namespace}.svc.cluster.local"
  part_of        = { "app.kubernetes.io/part-of" = "fedflow-site" }

  pod_security_context = {
    run_as_non_root = true
    run_as_user     = 10001
    run_as_group    = 10001
    fs_group        = 10001
  }
}

resource "kubernetes_namespace_v1" "site" {
  metadata {
    name = local.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
    }
  }
  depends_on = [google_container_cluster.site]
}

resource "kubernetes_service_account_v1" "site" {
  metadata {
    name        = "site"
    namespace   = kubernetes_namespace_v1.site.metadata[0].name
    annotations = { "iam.gke.io/gcp-service-account" = google_service_account.site.email }
  }
  automount_service_account_token = false
}

resource "kubernetes_service_account_v1" "worker" {
  metadata {
    name        = "dask-worker"
    namespace   = kubernetes_namespace_v1.site.metadata[0].name
    annotations = { "iam.gke.io/gcp-service-account" = google_service_account.worker.email }
  }
  automount_service_account_token = false
}

# The scheduler gets a service account with no Google identity and no token.
resource "kubernetes_service_account_v1" "scheduler" {
  metadata {
    name      = "dask-scheduler"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  automount_service_account_token = false
}

resource "kubernetes_config_map_v1" "site" {
  metadata {
    name      = "fedflow-site"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  data = merge(
    {
      "site.yaml"   = yamlencode(local.site_config)
      "policy.yaml" = var.policy_yaml
    },
    { for i, t in var.trusted_issuers : "issuer-${i}.pub.pem" => t.public_key_pem },
  )
}

# --- persistent state ----------------------------------------------------------------------------

# The live hash-chained audit log and the quarantine (`state_dir`) outlive the pod: a regional
# persistent disk encrypted with the site's key. The site Deployment recreates (never overlaps)
# its pod so one writer owns the chain.
resource "kubernetes_storage_class_v1" "state" {
  metadata {
    name = "${local.namespace}-cmek"
  }
  storage_provisioner    = "pd.csi.storage.gke.io"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type                    = "pd-balanced"
    replication-type        = "regional-pd"
    disk-encryption-kms-key = google_kms_crypto_key.site.id
  }
  depends_on = [google_kms_crypto_key_iam_member.compute]
}

resource "kubernetes_persistent_volume_claim_v1" "state" {
  metadata {
    name      = "fedflow-state"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  spec {
    access_modes       = ["ReadWriteOnce"]
    storage_class_name = kubernetes_storage_class_v1.state.metadata[0].name
    resources {
      requests = { storage = var.state_volume_size }
    }
  }
  wait_until_bound = false
}

# --- Dask scheduler -----------------------------------------------------------------------------

resource "kubernetes_deployment_v1" "scheduler" {
  # checkov:skip=CKV_K8S_14:The image is var.image, whose validation block requires a digest-pinned reference (@sha256:...); checkov cannot see a variable without a default.
  # checkov:skip=CKV_K8S_43:Same: var.image must be pinned by digest (validation block in variables.tf).
  metadata {
    name      = "dask-scheduler"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
    labels    = merge(local.part_of, { "app.kubernetes.io/name" = "dask-scheduler" })
  }
  spec {
    replicas = 1
    selector {
      match_labels = { "app.kubernetes.io/name" = "dask-scheduler" }
    }
    template {
      metadata {
        labels = merge(local.part_of, { "app.kubernetes.io/name" = "dask-scheduler" })
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.scheduler.metadata[0].name
        automount_service_account_token = false
        security_context {
          run_as_non_root = local.pod_security_context.run_as_non_root
          run_as_user     = local.pod_security_context.run_as_user
          run_as_group    = local.pod_security_context.run_as_group
          fs_group        = local.pod_security_context.fs_group
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "scheduler"
          image             = var.image
          image_pull_policy = "Always"
          # The dashboard stays off: nothing outside the namespace may reach the cluster.
          command = ["dask", "scheduler", "--port", "8786", "--no-dashboard", "--no-show"]
          port {
            name           = "dask"
            container_port = 8786
          }
          env {
            name  = "DASK_TEMPORARY_DIRECTORY"
            value = "/scratch"
          }
          resources {
            requests = { cpu = "500m", memory = "1Gi" }
            limits   = { cpu = "500m", memory = "1Gi" }
          }
          liveness_probe {
            tcp_socket {
              port = 8786
            }
            period_seconds = 20
          }
          readiness_probe {
            tcp_socket {
              port = 8786
            }
            period_seconds = 10
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }
          volume_mount {
            name       = "scratch"
            mount_path = "/scratch"
          }
        }
        volume {
          name = "scratch"
          empty_dir {}
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "scheduler" {
  metadata {
    name      = "dask-scheduler"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  spec {
    type     = "ClusterIP"
    selector = { "app.kubernetes.io/name" = "dask-scheduler" }
    port {
      name        = "dask"
      port        = 8786
      target_port = 8786
    }
  }
}

# --- Dask workers -------------------------------------------------------------------------------

resource "kubernetes_deployment_v1" "worker" {
  # checkov:skip=CKV_K8S_14:The image is var.image, whose validation block requires a digest-pinned reference (@sha256:...); checkov cannot see a variable without a default.
  # checkov:skip=CKV_K8S_43:Same: var.image must be pinned by digest (validation block in variables.tf).
  metadata {
    name      = "dask-worker"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
    labels    = merge(local.part_of, { "app.kubernetes.io/name" = "dask-worker" })
  }
  spec {
    replicas = var.dask_workers
    selector {
      match_labels = { "app.kubernetes.io/name" = "dask-worker" }
    }
    template {
      metadata {
        labels = merge(local.part_of, { "app.kubernetes.io/name" = "dask-worker" })
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.worker.metadata[0].name
        automount_service_account_token = false # Workload Identity goes through the GKE metadata server.
        security_context {
          run_as_non_root = local.pod_security_context.run_as_non_root
          run_as_user     = local.pod_security_context.run_as_user
          run_as_group    = local.pod_security_context.run_as_group
          fs_group        = local.pod_security_context.fs_group
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "worker"
          image             = var.image
          image_pull_policy = "Always"
          command = [
            "dask", "worker", local.site_config.dask.scheduler_address,
            "--nthreads", tostring(var.dask_threads_per_worker),
            "--worker-port", "8789", "--nanny-port", "8790", "--no-dashboard",
            "--local-directory", "/scratch",
          ]
          port {
            name           = "worker"
            container_port = 8789
          }
          resources {
            requests = { cpu = tostring(var.dask_threads_per_worker), memory = "${4 * var.dask_threads_per_worker}Gi" }
            limits   = { cpu = tostring(var.dask_threads_per_worker), memory = "${4 * var.dask_threads_per_worker}Gi" }
          }
          liveness_probe {
            tcp_socket {
              port = 8790
            }
            period_seconds = 20
          }
          readiness_probe {
            tcp_socket {
              port = 8789
            }
            period_seconds = 10
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }
          volume_mount {
            name       = "scratch"
            mount_path = "/scratch"
          }
        }
        volume {
          name = "scratch"
          empty_dir {}
        }
      }
    }
  }
  depends_on = [kubernetes_deployment_v1.scheduler]
}

# --- site service -------------------------------------------------------------------------------

resource "kubernetes_deployment_v1" "site" {
  # checkov:skip=CKV_K8S_14:The image is var.image, whose validation block requires a digest-pinned reference (@sha256:...); checkov cannot see a variable without a default.
  # checkov:skip=CKV_K8S_43:Same: var.image must be pinned by digest (validation block in variables.tf).
  metadata {
    name      = "site"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
    labels    = merge(local.part_of, { "app.kubernetes.io/name" = "site" })
  }
  # The pod waits for the custodian's TLS secret; do not block the apply on it.
  wait_for_rollout = false
  spec {
    replicas = 1
    strategy {
      type = "Recreate"
    }
    selector {
      match_labels = { "app.kubernetes.io/name" = "site" }
    }
    template {
      metadata {
        labels = merge(local.part_of, { "app.kubernetes.io/name" = "site" })
        annotations = {
          "fedflow/config-digest" = sha256(jsonencode(kubernetes_config_map_v1.site.data))
        }
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.site.metadata[0].name
        automount_service_account_token = false # Workload Identity goes through the GKE metadata server.
        security_context {
          run_as_non_root = local.pod_security_context.run_as_non_root
          run_as_user     = local.pod_security_context.run_as_user
          run_as_group    = local.pod_security_context.run_as_group
          fs_group        = local.pod_security_context.fs_group
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "site"
          image             = var.image
          image_pull_policy = "Always"
          command           = ["fedflow", "site", "serve", "--config", "${local.config_dir}/site.yaml"]
          port {
            name           = "site"
            container_port = var.service_port
          }
          env {
            name  = "DO_NOT_TRACK"
            value = "1"
          }
          resources {
            requests = { cpu = "1", memory = "2Gi" }
            limits   = { cpu = "1", memory = "2Gi" }
          }
          liveness_probe {
            tcp_socket {
              port = var.service_port
            }
            period_seconds = 20
          }
          readiness_probe {
            tcp_socket {
              port = var.service_port
            }
            period_seconds = 10
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }
          volume_mount {
            name       = "config"
            mount_path = local.config_dir
            read_only  = true
          }
          volume_mount {
            name       = "tls"
            mount_path = local.tls_dir
            read_only  = true
          }
          volume_mount {
            name       = "state"
            mount_path = local.state_dir
          }
        }
        volume {
          name = "config"
          config_map {
            name = kubernetes_config_map_v1.site.metadata[0].name
          }
        }
        volume {
          name = "tls"
          secret {
            secret_name  = var.tls_secret_name
            default_mode = "0400"
            items {
              key  = "tls.crt"
              path = "site.crt"
            }
            items {
              key  = "tls.key"
              path = "site.key"
            }
            items {
              key  = "ca.crt"
              path = "orchestrator-ca.crt"
            }
          }
        }
        volume {
          name = "state"
          persistent_volume_claim {
            claim_name = kubernetes_persistent_volume_claim_v1.state.metadata[0].name
          }
        }
      }
    }
  }
  depends_on = [kubernetes_deployment_v1.scheduler]
}

# A passthrough network load balancer: TCP to the pod, mutual TLS ends in the site service.
resource "kubernetes_service_v1" "site" {
  metadata {
    name      = "site"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
    annotations = {
      "cloud.google.com/l4-rbs" = "enabled"
    }
  }
  spec {
    type                        = "LoadBalancer"
    external_traffic_policy     = "Local"
    load_balancer_source_ranges = var.orchestrator_cidrs
    selector                    = { "app.kubernetes.io/name" = "site" }
    port {
      name        = "site"
      port        = var.service_port
      target_port = var.service_port
      protocol    = "TCP"
    }
  }
}

# --- network policies ---------------------------------------------------------------------------

resource "kubernetes_network_policy_v1" "default_deny" {
  metadata {
    name      = "default-deny-ingress"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  spec {
    pod_selector {}
    policy_types = ["Ingress"]
  }
}

resource "kubernetes_network_policy_v1" "site_from_orchestrator" {
  metadata {
    name      = "site-from-orchestrator"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  spec {
    pod_selector {
      match_labels = { "app.kubernetes.io/name" = "site" }
    }
    policy_types = ["Ingress"]
    ingress {
      dynamic "from" {
        for_each = var.orchestrator_cidrs
        content {
          ip_block {
            cidr = from.value
          }
        }
      }
      ports {
        port     = tostring(var.service_port)
        protocol = "TCP"
      }
    }
  }
}

resource "kubernetes_network_policy_v1" "dask_inside_namespace" {
  metadata {
    name      = "dask-inside-namespace"
    namespace = kubernetes_namespace_v1.site.metadata[0].name
  }
  spec {
    pod_selector {
      match_labels = local.part_of
    }
    policy_types = ["Ingress"]
    ingress {
      from {
        pod_selector {
          match_labels = local.part_of
        }
      }
      ports {
        port     = "8786"
        protocol = "TCP"
      }
      ports {
        port     = "8789"
        protocol = "TCP"
      }
      ports {
        port     = "8790"
        protocol = "TCP"
      }
    }
  }
}
