{{/* The release's base name, at most 40 characters so that
"<name>-transfer-green-preview" stays within 63. */}}
{{- define "fleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleet.labels" -}}
app.kubernetes.io/name: fleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fleet.selector" -}}
app.kubernetes.io/name: fleet
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The gRPC (or, for the gateway, HTTPS) port of a component. */}}
{{- define "fleet.port" -}}
{{- $ports := dict "gateway" 8443 "auth" 50051 "users" 50052 "stats" 50053 "transfer" 50054 "notify" 50055 -}}
{{- get $ports . -}}
{{- end -}}

{{/* Slots with a tag, in order. */}}
{{- define "fleet.slots" -}}
{{- range $slot := list "blue" "green" -}}
{{- if (get $.Values.slots $slot).tag }}{{ $slot }} {{ end -}}
{{- end -}}
{{- end -}}

{{- define "fleet.idleSlot" -}}
{{- if eq .Values.activeSlot "blue" }}green{{ else }}blue{{ end -}}
{{- end -}}

{{- define "fleet.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "fleet.fullname" .)) -}}
{{- end -}}

{{/* What each component calls: its NetworkPolicy's egress, and (turned
around) who may call it. Every process asks auth for token keys and
revocations. */}}
{{- define "fleet.calls" -}}
{{- dict
  "gateway" (list "auth" "users" "stats" "transfer" "notify")
  "auth" (list "users")
  "users" (list "auth")
  "stats" (list "auth" "users")
  "transfer" (list "auth" "users" "stats")
  "notify" (list "auth") | toJson -}}
{{- end -}}

{{- define "fleet.callees" -}}
{{- get (include "fleet.calls" . | fromJson) . | toJson -}}
{{- end -}}

{{/* The components that call this one. */}}
{{- define "fleet.callers" -}}
{{- $callee := . -}}
{{- $callers := list -}}
{{- range $caller, $callees := include "fleet.calls" . | fromJson -}}
{{- if has $callee $callees }}{{ $callers = append $callers $caller }}{{ end -}}
{{- end -}}
{{- $callers | toJson -}}
{{- end -}}

{{/* The environment of one component in one slot: its listener and every
service's address within the slot. Args: dict root, component, slot. */}}
{{- define "fleet.env" -}}
{{- $root := .root -}}
{{- $full := include "fleet.fullname" $root -}}
- name: FLEET_ADMIN_LISTEN
  value: "0.0.0.0:9090"
{{- range $name := list "auth" "users" "stats" "transfer" "notify" }}
{{- $port := include "fleet.port" $name }}
{{- $key := upper $name }}
{{- if eq $name $.component }}
- name: FLEET_{{ $key }}__LISTEN
  value: "0.0.0.0:{{ $port }}"
{{- end }}
- name: FLEET_{{ $key }}__URL
  value: "http://{{ $full }}-{{ $name }}-{{ $.slot }}:{{ $port }}"
{{- end }}
- name: FLEET_DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "fleet.secretName" $root }}, key: database-url } }
- name: FLEET_AMQP_URL
  valueFrom: { secretKeyRef: { name: {{ include "fleet.secretName" $root }}, key: amqp-url } }
- name: FLEET_TOKENS__SERVICE_SECRET
  valueFrom: { secretKeyRef: { name: {{ include "fleet.secretName" $root }}, key: service-secret } }
{{- if eq .component "gateway" }}
- name: FLEET_REDIS_URL
  valueFrom: { secretKeyRef: { name: {{ include "fleet.secretName" $root }}, key: redis-url } }
- name: FLEET_GATEWAY__HTTPS_LISTEN
  value: "0.0.0.0:8443"
- name: FLEET_GATEWAY__HTTP_LISTEN
  value: "0.0.0.0:8080"
{{- if $root.Values.gatewayTls.secretName }}
- name: FLEET_GATEWAY__TLS_CERT
  value: /etc/fleet/tls/tls.crt
- name: FLEET_GATEWAY__TLS_KEY
  value: /etc/fleet/tls/tls.key
{{- end }}
{{- end }}
{{- if eq .component "auth" }}
- name: FLEET_AUTH__MFA__ENCRYPTION_KEY
  valueFrom: { secretKeyRef: { name: {{ include "fleet.secretName" $root }}, key: mfa-encryption-key } }
{{- end }}
- name: OTEL_SERVICE_NAME
  value: fleet-{{ .component }}
{{- range $k, $v := (get $root.Values.components .component).env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}
