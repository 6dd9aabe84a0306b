{{/* The chart name, or nameOverride. */}}
{{- define "chatwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full resource name: fullnameOverride, or release-chart (just the release when it already contains the chart name). */}}
{{- define "chatwarden.fullname" -}}
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

{{/* chart-version label value. */}}
{{- define "chatwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "chatwarden.labels" -}}
helm.sh/chart: {{ include "chatwarden.chart" . }}
{{ include "chatwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "chatwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "chatwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chatwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding MICROSOFT_APP_PASSWORD, CHATWARDEN_DATABASE_URL and CHATWARDEN_ALERT_SECRET. */}}
{{- define "chatwarden.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "chatwarden.fullname" . }}
{{- end }}
{{- end }}

{{/* Fails the render, naming the value, when a required setting is missing. */}}
{{- define "chatwarden.validate" -}}
{{- $_ := required "config.microsoftAppId is required (MICROSOFT_APP_ID)" .Values.config.microsoftAppId }}
{{- $_ := required "config.microsoftAppTenantId is required (MICROSOFT_APP_TENANT_ID)" .Values.config.microsoftAppTenantId }}
{{- $_ := required "config.securityTeamId is required (CHATWARDEN_SECURITY_TEAM_ID)" .Values.config.securityTeamId }}
{{- $_ := required "config.securityChannelId is required (CHATWARDEN_SECURITY_CHANNEL_ID)" .Values.config.securityChannelId }}
{{- if not .Values.config.admins }}
{{- fail "config.admins needs at least one Entra object id (CHATWARDEN_ADMINS)" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- $_ := required "secret.microsoftAppPassword is required unless existingSecret is set (MICROSOFT_APP_PASSWORD)" .Values.secret.microsoftAppPassword }}
{{- $_ := required "secret.databaseUrl is required unless existingSecret is set (CHATWARDEN_DATABASE_URL)" .Values.secret.databaseUrl }}
{{- if and (gt (int .Values.replicaCount) 1) (not (hasPrefix "postgres" .Values.secret.databaseUrl)) }}
{{- fail "secret.databaseUrl must be postgres://... when replicaCount > 1 (SQLite is for one instance)" }}
{{- end }}
{{- if and .Values.secret.alertSecret (lt (len .Values.secret.alertSecret) 16) }}
{{- fail "secret.alertSecret must be at least 16 characters" }}
{{- end }}
{{- end }}
{{- end }}
