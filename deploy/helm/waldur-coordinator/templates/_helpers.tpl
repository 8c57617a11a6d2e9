{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "waldur-coordinator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "waldur-coordinator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "waldur-coordinator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "waldur-coordinator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "waldur-coordinator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "waldur-coordinator.labels" -}}
helm.sh/chart: {{ include "waldur-coordinator.chart" . }}
{{ include "waldur-coordinator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The admin port, taken from config.admin.listen so the config stays the one source. */}}
{{- define "waldur-coordinator.adminPort" -}}
{{- $listen := "0.0.0.0:9180" -}}
{{- if and .Values.config .Values.config.admin .Values.config.admin.listen -}}
{{- $listen = .Values.config.admin.listen -}}
{{- end -}}
{{- splitList ":" $listen | last -}}
{{- end -}}

{{/* The Secret holding credentials, or "" when there is none. */}}
{{- define "waldur-coordinator.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else if .Values.secret.create -}}
{{- include "waldur-coordinator.fullname" . -}}
{{- end -}}
{{- end -}}
