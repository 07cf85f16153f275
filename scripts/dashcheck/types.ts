// Types scripts/dashboards-check.sh checks the shipped Grafana files against.
// The generated gen/**/*.ts files (not committed) each declare one file's
// content as a typed constant: `const d: Json<Dashboard> = <the JSON>;`.

import type { Dashboard } from '@grafana/schema';

/**
 * A type as it is written in JSON. @grafana/schema declares closed sets of
 * strings as TypeScript string enums (FieldColorModeId, ThresholdsMode,
 * MappingType, …), and a string literal from a JSON file is never assignable
 * to an enum type, so `"mode": "absolute"` would fail although it is exactly
 * what Grafana stores. Json<T> turns every string enum (member) into the
 * union of its string values and leaves everything else as it is: string
 * unions stay unions, numeric enums stay (a JSON 1 is assignable to a numeric
 * enum with a member 1, a 7 is not), required fields stay required, and
 * object literals keep TypeScript's excess-property check.
 */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/** A dashboard JSON file as Grafana's dashboard provisioning reads it. */
export type DashboardFile = Json<Dashboard>;

// ---------------------------------------------------------------------------
// Grafana 11 alerting file provisioning (apiVersion 1), written by hand from
// Grafana's documented format ("Create and manage alerting resources using
// file provisioning") and the fields its reader declares
// (pkg/services/provisioning/alerting/*_types.go). Only what revpulse uses
// is typed closely; the rest of the format is allowed but loosely typed.

/** A Prometheus-style duration: 30s, 5m, 1h30m, 4h. */
type Duration = `${number}${'ms' | 's' | 'm' | 'h' | 'd' | 'w' | 'y'}` | `${number}${'h' | 'm'}${number}${'m' | 's'}`;

export interface AlertingFile {
  apiVersion: 1;
  groups?: RuleGroup[];
  deleteRules?: Array<{ orgId?: number; uid: string }>;
  contactPoints?: ContactPoint[];
  deleteContactPoints?: Array<{ orgId?: number; uid: string }>;
  policies?: Policy[];
  resetPolicies?: number[];
  templates?: Array<{ orgId?: number; name: string; template: string }>;
  deleteTemplates?: Array<{ orgId?: number; name: string }>;
  muteTimes?: Array<{ orgId?: number; name: string; time_intervals: Array<Record<string, unknown>> }>;
  deleteMuteTimes?: Array<{ orgId?: number; name: string }>;
}

export interface RuleGroup {
  orgId?: number;
  name: string;
  /** Folder title; created when missing (the dashboards' folder is `revpulse`). */
  folder: string;
  interval: Duration;
  rules: [AlertRule, ...AlertRule[]];
}

export interface AlertRule {
  /** 1–40 characters of [a-zA-Z0-9_-]; checked by check.mjs. */
  uid: string;
  title: string;
  /** The refId of the query or expression whose result decides firing. */
  condition: string;
  data: [RuleQuery, ...RuleQuery[]];
  dashboardUid?: string;
  panelId?: number;
  noDataState: 'NoData' | 'Alerting' | 'OK' | 'KeepLast';
  execErrState: 'Error' | 'Alerting' | 'OK' | 'KeepLast';
  for: Duration;
  keepFiringFor?: Duration;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  isPaused?: boolean;
  notification_settings?: { receiver: string; group_by?: string[]; group_wait?: Duration; group_interval?: Duration; repeat_interval?: Duration };
}

export type RuleQuery = DatasourceQuery | ExpressionQuery;

interface TimeRange {
  /** Seconds before evaluation time. */
  from: number;
  to: number;
}

/** A query to a provisioned datasource (datasourceUid is checked against datasources.yml). */
export interface DatasourceQuery {
  refId: string;
  queryType?: string;
  relativeTimeRange: TimeRange;
  datasourceUid: string;
  model: ClickHouseSqlQuery;
}

/** The grafana-clickhouse-datasource (v4) SQL query model, as its panels store it. */
export interface ClickHouseSqlQuery {
  refId: string;
  datasource: { type: 'grafana-clickhouse-datasource'; uid: string };
  editorType: 'sql';
  /** 0 time series, 1 table, 2 logs, 3 trace, 4 auto. */
  format: 0 | 1 | 2 | 3 | 4;
  queryType: 'table' | 'timeseries' | 'logs' | 'traces';
  rawSql: string;
  intervalMs?: number;
  maxDataPoints?: number;
  pluginVersion?: string;
}

/** A server-side expression (datasourceUid `__expr__`). */
export interface ExpressionQuery {
  refId: string;
  queryType?: '';
  relativeTimeRange?: TimeRange;
  datasourceUid: '__expr__';
  model: ThresholdExpression | ReduceExpression | MathExpression;
}

interface ExpressionBase {
  refId: string;
  datasource: { type: '__expr__'; uid: '__expr__'; name?: string };
  hide?: boolean;
  intervalMs?: number;
  maxDataPoints?: number;
}

export interface ThresholdExpression extends ExpressionBase {
  type: 'threshold';
  /** The refId it compares. */
  expression: string;
  conditions: [
    {
      evaluator:
        | { type: 'gt' | 'lt'; params: [number] }
        | { type: 'within_range' | 'outside_range' | 'within_range_included' | 'outside_range_included'; params: [number, number] };
      unloadEvaluator?: { type: 'gt' | 'lt'; params: [number] };
    },
  ];
}

export interface ReduceExpression extends ExpressionBase {
  type: 'reduce';
  expression: string;
  reducer: 'last' | 'mean' | 'min' | 'max' | 'sum' | 'count';
  settings?: { mode: '' | 'dropNN' | 'replaceNN'; replaceWithValue?: number };
}

export interface MathExpression extends ExpressionBase {
  type: 'math';
  /** Refers to results as $A or ${A}. */
  expression: string;
}

export interface ContactPoint {
  orgId?: number;
  name: string;
  receivers: [Receiver, ...Receiver[]];
}

export type Receiver = SlackReceiver | OtherReceiver;

/** Grafana's other integrations, with their settings not typed here. */
export interface OtherReceiver {
  uid: string;
  type:
    | 'prometheus-alertmanager' | 'dingding' | 'discord' | 'email' | 'googlechat' | 'kafka' | 'line' | 'teams'
    | 'opsgenie' | 'pagerduty' | 'pushover' | 'sensugo' | 'sns' | 'telegram' | 'threema' | 'victorops'
    | 'webex' | 'webhook' | 'wecom' | 'oncall' | 'mqtt' | 'jira';
  settings: Record<string, unknown>;
  disableResolveMessage?: boolean;
}

export interface SlackReceiver {
  uid: string;
  type: 'slack';
  /** An incoming-webhook URL, or a bot token and a recipient. */
  settings: {
    url?: string;
    token?: string;
    recipient?: string;
    username?: string;
    icon_emoji?: string;
    icon_url?: string;
    mentionChannel?: 'here' | 'channel';
    mentionUsers?: string;
    mentionGroups?: string;
    endpointUrl?: string;
    title?: string;
    text?: string;
  };
  disableResolveMessage?: boolean;
}

type MatchOp = '=' | '!=' | '=~' | '!~';

export interface Route {
  receiver?: string;
  group_by?: string[];
  /** [label, operator, value]. */
  object_matchers?: Array<[string, MatchOp, string]>;
  matchers?: string[];
  mute_time_intervals?: string[];
  active_time_intervals?: string[];
  continue?: boolean;
  group_wait?: Duration;
  group_interval?: Duration;
  repeat_interval?: Duration;
  routes?: Route[];
}

/** The root of an organisation's notification policy tree. */
export interface Policy extends Route {
  orgId?: number;
  receiver: string;
}
