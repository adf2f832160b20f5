// Types and typed documents from the server's SDL and this app's operations: a schema change
// that breaks the client fails `npm run build` (codegen, then the type check).
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../schema.graphql",
  documents: ["src/**/*.graphql"],
  generates: {
    "src/generated/graphql.ts": {
      plugins: ["typescript", "typescript-operations", "typed-document-node"],
      config: { scalars: { DateTime: "string" }, enumsAsTypes: true, useTypeImports: true },
    },
  },
};

export default config;
