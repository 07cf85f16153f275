// Checked with the generated files on every run: what the types must refuse
// (each @ts-expect-error fails the run if its line compiles) and what they
// must accept. Keeps a version bump of @grafana/schema, or an edit of
// types.ts, from quietly weakening the check.

import type { AlertingFile, DashboardFile } from './types.js';

export const refused: unknown[] = [
  // @ts-expect-error schemaVersion is a number
  { schemaVersion: '39' } satisfies DashboardFile,
  // @ts-expect-error gridPos.w is a number
  { schemaVersion: 39, panels: [{ type: 'table', gridPos: { x: 0, y: 0, w: '12', h: 8 } }] } satisfies DashboardFile,
  // @ts-expect-error gridPos needs h
  { schemaVersion: 39, panels: [{ type: 'table', gridPos: { x: 0, y: 0, w: 12 } }] } satisfies DashboardFile,
  // @ts-expect-error no such property of a panel
  { schemaVersion: 39, panels: [{ type: 'table', gridpos: { x: 0, y: 0, w: 12, h: 8 } }] } satisfies DashboardFile,
  // @ts-expect-error no such color mode
  { schemaVersion: 39, panels: [{ type: 'stat', fieldConfig: { defaults: { color: { mode: 'rainbow' } }, overrides: [] } }] } satisfies DashboardFile,
  // @ts-expect-error no such variable type
  { schemaVersion: 39, templating: { list: [{ name: 'tenant', type: 'querry' }] } } satisfies DashboardFile,
  // @ts-expect-error refresh of a variable is 0, 1 or 2
  { schemaVersion: 39, templating: { list: [{ name: 'tenant', type: 'query', refresh: 7 }] } } satisfies DashboardFile,
  // @ts-expect-error a rule needs noDataState and execErrState
  { apiVersion: 1, groups: [{ name: 'g', folder: 'f', interval: '1m', rules: [{ uid: 'u', title: 't', condition: 'A', for: '5m', data: [{ refId: 'A', datasourceUid: '__expr__', model: { refId: 'A', datasource: { type: '__expr__', uid: '__expr__' }, type: 'math', expression: '1' } }] }] }] } satisfies AlertingFile,
  // @ts-expect-error for is a duration string
  { apiVersion: 1, groups: [{ name: 'g', folder: 'f', interval: '1m', rules: [{ uid: 'u', title: 't', condition: 'A', for: 5, noDataState: 'OK', execErrState: 'Error', data: [{ refId: 'A', datasourceUid: '__expr__', model: { refId: 'A', datasource: { type: '__expr__', uid: '__expr__' }, type: 'math', expression: '1' } }] }] }] } satisfies AlertingFile,
];

export const accepted: unknown[] = [
  {
    schemaVersion: 39,
    graphTooltip: 1,
    panels: [
      {
        type: 'stat',
        gridPos: { x: 0, y: 0, w: 12, h: 8 },
        fieldConfig: {
          defaults: {
            color: { mode: 'palette-classic' },
            thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: 80 }] },
            mappings: [{ type: 'value', options: { '1': { text: 'up' } } }],
          },
          overrides: [],
        },
        targets: [{ refId: 'A', rawSql: 'SELECT 1' }],
      },
      { type: 'row', id: 2, collapsed: false, panels: [] },
    ],
    templating: { list: [{ name: 'tenant', type: 'query', refresh: 1, hide: 0, sort: 1 }] },
  } satisfies DashboardFile,
];
