import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// In development the API runs beside Vite (`make run`); the built page is served by the API itself.
export default defineConfig({
  plugins: [react()],
  server: {
    proxy: { "/graphql": { target: "http://localhost:8000", ws: true }, "/avatars": "http://localhost:8000" },
  },
  build: { outDir: "dist", emptyOutDir: true },
});
