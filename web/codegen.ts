// Types and typed documents from the server's SDL and this app's operations: a schema change
// that breaks the client fails `npm run build` (codegen, then the type check).
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../schema.graphql",
  documents: ["src/**/*.graphql"],
  // typescript-operations emits the schema types the operations use (enums included) itself: the
  // `typescript` plugin beside it would declare those enums a second time.
  generates: {
    "src/generated/graphql.ts": {
      plugins: ["typescript-operations", "typed-document-node"],
      config: { scalars: { DateTime: "string" }, enumsAsTypes: true, useTypeImports: true },
    },
  },
};

export default config;
