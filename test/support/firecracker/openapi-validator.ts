// Checks API requests against Firecracker's own OpenAPI (Swagger 2.0) document
// (shared/firecracker/firecracker.yaml): the path must match a path template, the method must be
// defined for it, and the body must validate against the operation's body parameter schema.
// Schemas are Swagger 2.0 Schema Objects, i.e. JSON Schema draft 4 plus a few annotations, so they
// are compiled with Ajv's draft-04 class after `$ref`s are pointed at the document's definitions.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Ajv04Module from 'ajv-draft-04';
import type { ErrorObject, ValidateFunction } from 'ajv-draft-04';
import { parse as parseYaml } from 'yaml';

const Ajv04 = Ajv04Module.default;

type JsonObject = { [key: string]: unknown };

interface SwaggerParameter {
  readonly name: string;
  readonly in: 'body' | 'path' | 'query' | 'header' | 'formData';
  readonly required?: boolean;
  readonly type?: string;
  readonly schema?: JsonObject;
}

interface SwaggerOperation {
  readonly operationId?: string;
  readonly summary?: string;
  readonly description?: string;
  readonly consumes?: readonly string[];
  readonly parameters?: readonly SwaggerParameter[];
}

export interface SwaggerDocument {
  readonly swagger: string;
  readonly basePath?: string;
  readonly consumes?: readonly string[];
  readonly paths: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  readonly definitions: Readonly<Record<string, JsonObject>>;
}

/** One operation of the document. */
export interface SpecOperation {
  readonly method: string;
  readonly template: string;
  readonly operationId: string;
  readonly summary: string;
  readonly parameters: readonly SwaggerParameter[];
  readonly consumes: readonly string[];
}

/** The parts of an HTTP request the validator looks at. */
export interface RequestToCheck {
  readonly method: string;
  /** Request target, e.g. `/drives/base` (a query string is ignored). */
  readonly path: string;
  /** Raw body; '' or undefined when the request had none. */
  readonly body?: string;
  readonly contentType?: string;
  readonly transferEncoding?: string;
}

export interface RequestCheck {
  /** Empty when the request conforms to the document. */
  readonly violations: readonly string[];
  readonly operation?: SpecOperation;
  readonly pathParams: Readonly<Record<string, string>>;
  /** The parsed JSON body, when there was a parseable one. */
  readonly body?: unknown;
}

export interface ValidatorOptions {
  /**
   * Treat object schemas that list `properties` but say nothing about `additionalProperties` as
   * closed. The document never sets `additionalProperties: false`, so by Swagger rules unknown
   * fields would pass, but Firecracker's request structs are serde `deny_unknown_fields` and it
   * answers 400 to them. Default true (behave like Firecracker); false checks the bare document.
   */
  readonly closedObjects?: boolean;
}

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch'] as const;
/** Swagger 2.0 Schema Object keywords that JSON Schema draft 4 does not know (annotations only). */
const SWAGGER_ANNOTATIONS = ['readOnly', 'example', 'discriminator', 'xml', 'externalDocs'];
const SPEC_KEY = 'firecracker.yaml';

/** shared/firecracker/firecracker.yaml beside the repository, or $FIRECRACKER_OPENAPI_SPEC. */
export function defaultSpecPath(): string {
  return process.env.FIRECRACKER_OPENAPI_SPEC ?? fileURLToPath(new URL('../../../../shared/firecracker/firecracker.yaml', import.meta.url));
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function loadSwaggerDocument(path: string = defaultSpecPath()): SwaggerDocument {
  const doc: unknown = parseYaml(readFileSync(path, 'utf8'));
  if (!isObject(doc) || doc.swagger !== '2.0' || !isObject(doc.paths) || !isObject(doc.definitions)) {
    throw new Error(`${path} is not a Swagger 2.0 document with paths and definitions`);
  }
  return doc as unknown as SwaggerDocument;
}

/** Deep copy with every local `$ref` (`#/...`) pointed at the document registered in Ajv. */
function rebaseRefs(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(rebaseRefs);
  if (!isObject(value)) return value;
  const out: JsonObject = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key] = key === '$ref' && typeof inner === 'string' && inner.startsWith('#/') ? `${SPEC_KEY}${inner}` : rebaseRefs(inner);
  }
  return out;
}

/** Structural walk over schemas (not over property names): closes objects that list properties. */
function closeObjects(schema: JsonObject): JsonObject {
  const out: JsonObject = { ...schema };
  if (isObject(out.properties)) {
    const properties: JsonObject = {};
    for (const [name, sub] of Object.entries(out.properties)) properties[name] = isObject(sub) ? closeObjects(sub) : sub;
    out.properties = properties;
    if (!('additionalProperties' in out)) out.additionalProperties = false;
  }
  if (isObject(out.items)) out.items = closeObjects(out.items);
  if (isObject(out.additionalProperties)) out.additionalProperties = closeObjects(out.additionalProperties);
  for (const key of ['allOf', 'anyOf', 'oneOf']) {
    const list = out[key];
    if (Array.isArray(list)) out[key] = list.map((sub) => (isObject(sub) ? closeObjects(sub) : sub));
  }
  return out;
}

function collect(value: unknown, visit: (node: JsonObject) => void): void {
  if (Array.isArray(value)) value.forEach((v) => collect(v, visit));
  else if (isObject(value)) {
    visit(value);
    Object.values(value).forEach((v) => collect(v, visit));
  }
}

function describeError(error: ErrorObject): string {
  const at = error.instancePath === '' ? 'body' : `body${error.instancePath}`;
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'additionalProperties':
      return `${at}: unknown field "${String(params.additionalProperty)}"`;
    case 'required':
      return `${at}: missing required field "${String(params.missingProperty)}"`;
    case 'enum':
      return `${at}: must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return `${at}: ${error.message ?? error.keyword}`;
  }
}

interface Route {
  readonly template: string;
  readonly pattern: RegExp;
  readonly paramNames: readonly string[];
  /** Templates without parameters win over templated ones. */
  readonly literal: boolean;
}

/** Marks "no body to report" apart from a JSON body that is literally null or absent. */
const NO_BODY: unique symbol = Symbol('no body');

/** The path parameters of a matched route, percent-decoded and checked against the operation's declarations. */
function pathParamsOf(operation: SpecOperation, route: Route, match: RegExpExecArray, violations: string[]): Record<string, string> {
  const pathParams: Record<string, string> = {};
  route.paramNames.forEach((name, i) => {
    const raw = match[i + 1] ?? '';
    let value = raw;
    try {
      value = decodeURIComponent(raw);
    } catch {
      violations.push(`path parameter ${name}: malformed percent-encoding "${raw}"`);
    }
    pathParams[name] = value;
  });
  for (const param of operation.parameters) {
    if (param.in === 'path') {
      const value = pathParams[param.name];
      if (value === undefined || value === '') violations.push(`path parameter ${param.name} is required`);
      else if (param.type === 'integer' && !/^-?\d+$/.test(value)) violations.push(`path parameter ${param.name} must be an integer`);
    } else if (param.in !== 'body' && param.required) {
      violations.push(`${operation.operationId}: ${param.in} parameter ${param.name} is not supported by this checker`);
    }
  }
  return pathParams;
}

export class FirecrackerSpecValidator {
  /** Formats the document uses that are not Swagger data-type formats; Swagger says to ignore those. */
  readonly ignoredFormats: readonly string[];
  private readonly routes: Route[] = [];
  private readonly operations = new Map<string, SpecOperation>();
  private readonly bodyValidators = new Map<string, ValidateFunction>();
  private readonly ajv: InstanceType<typeof Ajv04>;

  constructor(
    readonly doc: SwaggerDocument,
    options: ValidatorOptions = {},
  ) {
    const closed = options.closedObjects ?? true;
    this.ajv = new Ajv04({ allErrors: true, strict: true, strictTypes: false, validateFormats: true });
    for (const keyword of SWAGGER_ANNOTATIONS) if (!this.ajv.getKeyword(keyword)) this.ajv.addKeyword({ keyword });
    const extensions = new Set<string>();
    const formats = new Set<string>();
    collect(doc.definitions, (node) => {
      for (const key of Object.keys(node)) if (key.startsWith('x-')) extensions.add(key);
      if (typeof node.format === 'string') formats.add(node.format);
    });
    collect(doc.paths, (node) => {
      if (typeof node.format === 'string') formats.add(node.format);
    });
    for (const keyword of extensions) if (!this.ajv.getKeyword(keyword)) this.ajv.addKeyword({ keyword });
    this.ignoredFormats = this.addFormats(formats);

    const definitions: JsonObject = {};
    for (const [name, schema] of Object.entries(doc.definitions)) {
      const rebased = rebaseRefs(schema) as JsonObject;
      definitions[name] = closed ? closeObjects(rebased) : rebased;
    }
    this.ajv.addSchema({ definitions }, SPEC_KEY);

    const basePath = (doc.basePath ?? '/').replace(/\/+$/, '');
    for (const [template, item] of Object.entries(doc.paths)) {
      const paramNames: string[] = [];
      const source = (basePath + template)
        .split('/')
        .map((segment) => {
          const param = /^\{(.+)\}$/.exec(segment);
          if (!param?.[1]) return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
          paramNames.push(param[1]);
          return '([^/]+)';
        })
        .join('/');
      this.routes.push({ template, pattern: new RegExp(`^${source || '/'}$`), paramNames, literal: paramNames.length === 0 });
      const shared = Array.isArray(item.parameters) ? (item.parameters as SwaggerParameter[]) : [];
      for (const method of HTTP_METHODS) {
        const op = item[method];
        if (!isObject(op)) continue;
        const operation = op as SwaggerOperation;
        const own = operation.parameters ?? [];
        const parameters = [...shared.filter((p) => !own.some((o) => o.name === p.name && o.in === p.in)), ...own];
        const spec: SpecOperation = {
          method: method.toUpperCase(),
          template,
          operationId: operation.operationId ?? `${method.toUpperCase()} ${template}`,
          summary: operation.summary ?? '',
          parameters,
          consumes: operation.consumes ?? doc.consumes ?? ['application/json'],
        };
        this.operations.set(`${spec.method} ${template}`, spec);
        const bodyParam = parameters.find((p) => p.in === 'body');
        if (bodyParam?.schema) {
          const schema = rebaseRefs(bodyParam.schema) as JsonObject;
          this.bodyValidators.set(spec.operationId, this.ajv.compile(closed ? closeObjects(schema) : schema));
        }
      }
    }
    this.routes.sort((a, b) => Number(b.literal) - Number(a.literal));
  }

  static load(path: string = defaultSpecPath(), options: ValidatorOptions = {}): FirecrackerSpecValidator {
    return new FirecrackerSpecValidator(loadSwaggerDocument(path), options);
  }

  /** Every operation of the document. */
  allOperations(): SpecOperation[] {
    return [...this.operations.values()];
  }

  /** Validates a value against one of the document's definitions (e.g. `Drive`). */
  validateDefinition(name: string, value: unknown): string[] {
    if (!(name in this.doc.definitions)) throw new Error(`no definition "${name}" in the document`);
    const validate = this.ajv.getSchema(`${SPEC_KEY}#/definitions/${name}`);
    if (!validate) throw new Error(`definition "${name}" did not compile`);
    return validate(value) ? [] : (validate.errors ?? []).map(describeError);
  }

  check(request: RequestToCheck): RequestCheck {
    const method = request.method.toUpperCase();
    const path = request.path.split('?')[0] ?? '';
    const violations: string[] = [];
    const matching = this.routes
      .map((route) => ({ route, match: route.pattern.exec(path) }))
      .filter((m): m is { route: Route; match: RegExpExecArray } => m.match !== null);
    if (matching.length === 0) {
      return { violations: [`no path of the document matches "${path}"`], pathParams: {} };
    }
    const found = matching.find((m) => this.operations.has(`${method} ${m.route.template}`));
    if (!found) {
      const template = matching[0]?.route.template ?? path;
      const defined = HTTP_METHODS.map((m) => m.toUpperCase()).filter((m) => this.operations.has(`${m} ${template}`));
      return {
        violations: [`${method} is not defined for ${template} (defined: ${defined.join(', ') || 'none'})`],
        pathParams: {},
      };
    }
    const operation = this.operations.get(`${method} ${found.route.template}`) as SpecOperation;
    const pathParams = pathParamsOf(operation, found.route, found.match, violations);

    const body = this.checkBody(request, operation, violations);
    return { violations, operation, pathParams, ...(body === NO_BODY ? {} : { body }) };
  }

  /** Checks the body (and its encoding and media type); NO_BODY when there is none to parse. */
  private checkBody(request: RequestToCheck, operation: SpecOperation, violations: string[]): unknown {
    const method = request.method.toUpperCase();
    const bodyParam = operation.parameters.find((p) => p.in === 'body');
    const raw = request.body ?? '';
    if (request.transferEncoding && /chunked/i.test(request.transferEncoding)) {
      violations.push('chunked transfer encoding: Firecracker (micro_http) needs a Content-Length');
    }
    if (raw === '') {
      if (bodyParam?.required) violations.push(`${operation.operationId}: a ${describeSchema(bodyParam.schema)} body is required`);
      return NO_BODY;
    }
    if (!bodyParam) {
      violations.push(`${operation.operationId} (${method} ${operation.template}) takes no body`);
      return NO_BODY;
    }
    const mediaType = (request.contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (!operation.consumes.includes(mediaType)) {
      violations.push(`Content-Type "${request.contentType ?? ''}" is not one the operation consumes (${operation.consumes.join(', ')})`);
    }
    let body: unknown;
    try {
      body = JSON.parse(raw) as unknown;
    } catch (error) {
      violations.push(`body is not JSON: ${(error as Error).message}`);
      return NO_BODY;
    }
    const validate = this.bodyValidators.get(operation.operationId);
    if (validate && !validate(body)) {
      for (const error of validate.errors ?? []) violations.push(`${operation.operationId} ${describeError(error)}`);
    }
    return body;
  }

  private addFormats(formats: Set<string>): string[] {
    const ignored: string[] = [];
    const inRange = (min: number, max: number) => (n: number) => Number.isInteger(n) && n >= min && n <= max;
    for (const format of formats) {
      switch (format) {
        case 'int32':
          this.ajv.addFormat(format, { type: 'number', validate: inRange(-(2 ** 31), 2 ** 31 - 1) });
          break;
        case 'int64':
          this.ajv.addFormat(format, { type: 'number', validate: (n: number) => Number.isInteger(n) });
          break;
        case 'float':
        case 'double':
          this.ajv.addFormat(format, { type: 'number', validate: (n: number) => Number.isFinite(n) });
          break;
        default:
          // Swagger 2.0: "format" is an open string; tools ignore formats they do not know.
          this.ajv.addFormat(format, true);
          ignored.push(format);
      }
    }
    return ignored;
  }
}

function describeSchema(schema: JsonObject | undefined): string {
  const ref = schema?.$ref;
  return typeof ref === 'string' ? ref.replace(/^#\/definitions\//, '') : 'JSON';
}
