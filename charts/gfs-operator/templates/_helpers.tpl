{{/* Chart name. */}}
{{/* The metrics token Secret's name; fails the render when metricsAuth is on without one. */}}
{{- define "gfs-operator.metricsSecret" -}}
{{- required "metricsAuth.secretName is required when metricsAuth.enabled is true" .Values.metricsAuth.secretName -}}
{{- end }}

{{- define "gfs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (release-scoped). */}}
{{- define "gfs-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of cluster-scoped objects: unique per release namespace too. */}}
{{- define "gfs-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "gfs-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gfs-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gfs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gfs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gfs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "gfs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gfs-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The GfsCluster the KEDA ScaledObject targets. */}}
{{- define "gfs-operator.kedaCluster" -}}
{{- default .Values.example.name .Values.keda.clusterName }}
{{- end }}
{{- define "gfs-operator.kedaNamespace" -}}
{{- default .Release.Namespace .Values.keda.clusterNamespace }}
{{- end }}

{{/* The admin listen flag of `gfs-operator run` (/metrics, /healthz, /readyz). */}}
{{- define "gfs-operator.adminFlag" -}}
--admin-listen
{{- end }}
